"""Random spatial transforms in physical units: affine (rotation, scaling, shear, flips,
translation) and a smooth non-linear displacement, applied in one resampling.

A grid is defined in millimetres about the centre of the image, so that source and output may
have different matrix sizes and voxel sizes (a 1 mm label map resampled onto a 0.9 x 1.8 mm
acquisition matrix, say). ``sample`` resamples through ``torch.nn.functional.grid_sample``:
nearest for labels, linear for images.

Shapes: 2 or 3 spatial dims; a grid is (1, *out_shape, ndim) with grid_sample's (x, y[, z])
order in [-1, 1] (align_corners=False).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.nn import functional as F

__all__ = ["random_matrix", "sample", "smooth_displacement", "smooth_noise", "uniform", "warp_grid"]


def uniform(generator: torch.Generator, low: float, high: float) -> float:
    """One draw from U(low, high) by ``generator``: the engine's every scalar random setting
    comes from here, so a seed fixes them all."""
    return low + (high - low) * float(torch.rand((), generator=generator))


def warp_grid(
    out_shape: Sequence[int],
    out_spacing: Sequence[float],
    src_shape: Sequence[int],
    src_spacing: Sequence[float],
    matrix: torch.Tensor,
    translation: torch.Tensor | None = None,
    displacement: torch.Tensor | None = None,
) -> torch.Tensor:
    """The grid that samples a source image at ``matrix @ p + translation + displacement(p)``
    for every output voxel position ``p`` (mm, about the centre).

    Args:
        out_shape, out_spacing: output matrix and voxel size (mm), array axis order.
        src_shape, src_spacing: source matrix and voxel size (mm), array axis order.
        matrix: (d, d) output-to-source map in mm, array axis order.
        translation: (d,) mm; displacement: (d, *out_shape) mm, array axis order.

    Returns:
        float32 (1, *out_shape, d) for ``F.grid_sample`` (align_corners=False).
    """
    d = len(out_shape)
    axes = [(torch.arange(n, dtype=torch.float32) - (n - 1) / 2) * s for n, s in zip(out_shape, out_spacing)]
    points = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0).reshape(d, -1)  # (d, N) mm
    source = matrix.to(torch.float32) @ points
    if translation is not None:
        source = source + translation.to(torch.float32)[:, None]
    if displacement is not None:
        source = source + displacement.reshape(d, -1).to(torch.float32)
    extent = torch.tensor([n * s / 2 for n, s in zip(src_shape, src_spacing)], dtype=torch.float32)
    normalised = (source / extent[:, None]).T.reshape(*out_shape, d)
    return normalised.flip(-1)[None]  # grid_sample wants (x, y[, z]) = reversed array axes


def sample(image: torch.Tensor, grid: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Resample an (H, W) or (D, H, W) ``image`` on ``grid``; zero outside it.

    ``mode`` is "bilinear" (linear in 3D as well, grid_sample's name) or "nearest"."""
    values = image[None, None].to(torch.float32)
    out = F.grid_sample(values, grid.to(image.device), mode=mode, padding_mode="zeros", align_corners=False)[0, 0]
    return out.to(image.dtype) if mode == "nearest" else out


def random_matrix(
    ndim: int,
    generator: torch.Generator,
    max_rotation_deg: float = 15.0,
    scale_range: tuple[float, float] = (0.9, 1.1),
    max_shear: float = 0.05,
    flip: bool = True,
) -> torch.Tensor:
    """A random (d, d) map: rotation about every axis up to ``max_rotation_deg``, independent
    scale per axis, small shear, and a random flip of each axis when ``flip``."""

    matrix = torch.eye(ndim, dtype=torch.float64)
    planes = [(0, 1)] if ndim == 2 else [(0, 1), (0, 2), (1, 2)]
    for a, b in planes:
        angle = math.radians(uniform(generator, -max_rotation_deg, max_rotation_deg))
        rotation = torch.eye(ndim, dtype=torch.float64)
        rotation[a, a] = rotation[b, b] = math.cos(angle)
        rotation[a, b], rotation[b, a] = -math.sin(angle), math.sin(angle)
        matrix = rotation @ matrix
    shear = torch.eye(ndim, dtype=torch.float64)
    for a in range(ndim):
        for b in range(ndim):
            if a != b:
                shear[a, b] = uniform(generator, -max_shear, max_shear)
    scale = torch.diag(torch.tensor([uniform(generator, *scale_range) for _ in range(ndim)], dtype=torch.float64))
    signs = torch.diag(torch.tensor([-1.0 if flip and uniform(generator, 0, 1) < 0.5 else 1.0 for _ in range(ndim)], dtype=torch.float64))
    return (matrix @ shear @ scale @ signs).to(torch.float32)


def smooth_displacement(
    out_shape: Sequence[int], generator: torch.Generator, max_std_mm: float = 3.0, coarse: int = 8
) -> torch.Tensor:
    """A smooth random displacement field (d, *out_shape) in mm: Gaussian noise on a
    ``coarse``^d grid (standard deviation drawn up to ``max_std_mm``), upsampled (linear).
    SynthMorph's recipe for non-linear anatomical variability, without its diffeomorphic
    integration (small displacements of a few mm do not fold)."""
    std = max_std_mm * float(torch.rand((), generator=generator))
    return smooth_noise(out_shape, coarse, std, generator, channels=len(out_shape))


def smooth_noise(shape: Sequence[int], coarse: int, std: float, generator: torch.Generator, channels: int = 1) -> torch.Tensor:
    """A smooth random field (channels, *shape): Gaussian noise of standard deviation ``std`` on a
    ``coarse``^d grid, upsampled (linear, corners aligned)."""
    d = len(shape)
    noise = torch.randn((1, channels, *([coarse] * d)), generator=generator) * std
    mode = "bilinear" if d == 2 else "trilinear"
    return F.interpolate(noise, size=tuple(shape), mode=mode, align_corners=True)[0]
