"""A random multi-coil Cartesian acquisition of a 2D magnitude image.

What real raw k-space has and a fixed simulation lacks, drawn afresh per example:

- a matrix and field of view of their own: rectangular matrices, anisotropic pixels, and a
  readout that is often 2x oversampled (the object fills the middle half of it, as in raw
  Siemens and fastMRI data); the object at any in-plane orientation, flipped, scaled, slightly
  deformed, and blurred first where the matrix is coarser than the source;
- receive coils from a physical model (`physics.coil_loops`): 4 to 32 circular loops on one or
  several rings around the head, 10-35 mm outside it, random in position, tilt and size;
- a complex image phase: a smooth background (receive and transmit phase) and the faster
  off-resonance phase that susceptibility leaves in gradient-echo images (`physics.off_resonance_phase`);
- complex Gaussian noise at a random SNR, correlated across coils through a random covariance
  (real arrays share noise through mutual inductance and the sample).

Layout: k-space is (coil, readout, phase-encode), fastMRI's, so that 1D masks on the last axis
choose phase-encode lines as a real acquisition does. Unitary centred FFTs (`physics.fft`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from monai.networks.layers import GaussianFilter
from torch.nn import functional as F

from mribundles.physics.coil_loops import loop_sensitivities, plane_points
from mribundles.physics.coils import rss
from mribundles.physics.fft import fft2c
from mribundles.physics.simulate import off_resonance_phase, smooth_phase
from mribundles.synth.spatial import random_matrix, sample, smooth_displacement, uniform, warp_grid

__all__ = ["AcquisitionRanges", "correlated_noise", "object_extent", "random_coil_array", "simulate_acquisition"]


@dataclass
class AcquisitionRanges:
    """The ranges each acquisition parameter is drawn from (uniform unless said otherwise)."""

    coils: tuple[int, ...] = (4, 8, 12, 16, 20, 24, 32)  # drawn from this list
    phase_encodes: tuple[int, int] = (64, 192)  # matrix along the last axis (even)
    readout_aspect: tuple[float, float] = (0.8, 1.25)  # readout matrix / phase-encode matrix
    readout_oversampling: float = 0.5  # probability of a 2x oversampled readout
    # Cap on readout x phase-encode samples: it bounds a CPU training step (the networks are
    # convolutional, so they apply to larger matrices); real scans here are 64^2 to 230 x 180.
    max_pixels: int = 160 * 160
    fov_mm: tuple[float, float] = (128.0, 260.0)  # phase-encode field of view (small ones crop the head)
    pixel_aspect: tuple[float, float] = (0.85, 1.2)  # readout / phase-encode pixel size
    scale: tuple[float, float] = (0.85, 1.15)  # object scaling, per axis
    max_rotation_deg: float = 15.0  # on top of a random multiple of 90 degrees
    max_displacement_mm: float = 3.0  # smooth non-linear deformation
    snr: tuple[float, float] = (5.0, 60.0)  # image SNR of the RSS inside the object (log-uniform)
    max_noise_correlation: float = 0.5  # off-diagonal strength of the noise mixing matrix
    max_phase_order: int = 3  # polynomial order of the background phase
    # Off-resonance phase: its standard deviation over the field of view (rad, uniform from 0, so
    # some draws have none) and the scale it varies on (mm). `synth.realism`'s phase roughness
    # (mean phase step between neighbouring pixels) is 0.38 rad on the real in-vivo brain; with
    # the polynomial phase alone 9 in 10 engine draws stayed under 0.12, and the RVN bundle
    # trained on them fell below zero-filling on a third of rough draws (scripts/phase_gap.py).
    off_resonance_std_rad: tuple[float, float] = (0.0, 3.0)
    off_resonance_correlation_mm: tuple[float, float] = (8.0, 40.0)


def _even(n: float) -> int:
    return max(2, 2 * round(n / 2))


def random_coil_array(
    num_coils: int, generator: torch.Generator, extent: Callable[[float], float] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loops of a head array: ``num_coils`` on ceil(num_coils / 8) rings around the z axis.

    Each ring sits at its own height (within +-60 mm of the imaged plane), its loops evenly
    spaced in azimuth from a random start with some jitter, each 20-45 mm in radius, facing the
    axis with a random tilt. A loop sits 10-35 mm outside the object (close-fitting, as head
    arrays are): ``extent(angle)`` gives the object's radius in mm in that in-plane direction
    (default: a 95 x 80 mm ellipse, an adult head).

    Returns:
        centres (coil, 3) mm, normals (coil, 3), radii (coil,) mm.
    """
    extent = extent or (lambda angle: 1 / math.hypot(math.cos(angle) / 95.0, math.sin(angle) / 80.0))
    rings = math.ceil(num_coils / 8)
    per_ring = [num_coils // rings + (1 if r < num_coils % rings else 0) for r in range(rings)]
    centres, normals, radii = [], [], []
    for count in per_ring:
        height = uniform(generator, -60, 60) if rings > 1 else uniform(generator, -20, 20)
        gap = uniform(generator, 10, 35)
        start = uniform(generator, 0, 2 * math.pi)
        for k in range(count):
            angle = start + 2 * math.pi * k / count + uniform(generator, -0.15, 0.15)
            distance = max(extent(angle), 50.0) + gap
            position = torch.tensor([distance * math.cos(angle), distance * math.sin(angle), height])
            inward = -position / position.norm()
            tilt = torch.tensor([uniform(generator, -0.3, 0.3) for _ in range(3)])
            centres.append(position)
            normals.append(inward + tilt)
            radii.append(uniform(generator, 20, 45))
    return torch.stack(centres), torch.stack(normals), torch.tensor(radii)


def object_extent(support: torch.Tensor, spacing: tuple[float, float]) -> Callable[[float], float]:
    """The radius (mm) of an object's support (H, W) bool in each in-plane direction, about the
    image centre, as a function of the angle (x along columns, y along rows)."""
    points = plane_points(tuple(support.shape), spacing)[support]
    if points.numel() == 0:
        return lambda angle: 0.0
    angles, radii = torch.atan2(points[:, 1], points[:, 0]), points[:, :2].norm(dim=-1)
    bins = 72
    index = ((angles + math.pi) / (2 * math.pi) * bins).long().clamp(0, bins - 1)
    table = torch.zeros(bins).scatter_reduce(0, index, radii, reduce="amax")

    def extent(angle: float) -> float:
        b = int(((angle + math.pi) % (2 * math.pi)) / (2 * math.pi) * bins) % bins
        return float(table[[(b - 1) % bins, b, (b + 1) % bins]].max())

    return extent


def correlated_noise(shape: tuple[int, ...], generator: torch.Generator, max_correlation: float) -> torch.Tensor:
    """Complex Gaussian noise (coil, ...) whose coils are mixed by L = I + rho G (G complex
    Gaussian / sqrt(coils), rho up to ``max_correlation``), scaled to unit mean variance per coil:
    covariance L L^H, as a real array's noise pre-scan shows."""
    coils = shape[0]
    mixing = torch.randn((coils, coils), generator=generator, dtype=torch.complex64) / math.sqrt(coils)
    mixing = torch.eye(coils, dtype=torch.complex64) + uniform(generator, 0, max_correlation) * mixing
    mixing = mixing / torch.sqrt((mixing.abs() ** 2).sum(1).mean())
    white = torch.randn(shape, generator=generator, dtype=torch.complex64)
    return (mixing @ white.reshape(coils, -1)).reshape(shape)


def simulate_acquisition(
    image: torch.Tensor,
    spacing: tuple[float, float],
    generator: torch.Generator,
    ranges: AcquisitionRanges | None = None,
) -> tuple[torch.Tensor, dict]:
    """Fully sampled multi-coil k-space of a random acquisition of ``image``.

    Args:
        image: real (H, W) magnitude image, values in [0, 1].
        spacing: its pixel size in mm along (H, W).
        generator: seeded CPU generator; every random draw comes from it.
        ranges: what to draw from (default `AcquisitionRanges()`).

    Returns:
        kspace: complex64 (coil, readout, phase-encode), centred, unitary FFT scaling.
        info: the drawn parameters (coils, matrix, pixel size in mm, oversampling, snr).
    """
    r = ranges or AcquisitionRanges()
    shape, pixel, oversampling = _draw_matrix(r, generator)
    magnitude = _place_object(image, spacing, shape, pixel, r, generator)
    inside = magnitude > 0.1 * magnitude.amax().clamp_min(1e-6)
    maps = _receive_maps(inside, pixel, r, generator)

    phase_order = int(torch.randint(1, r.max_phase_order + 1, (), generator=generator))
    phase = smooth_phase(shape, generator, phase_order) * off_resonance_phase(
        shape, pixel, generator, uniform(generator, *r.off_resonance_std_rad), uniform(generator, *r.off_resonance_correlation_mm))
    coil_images = maps * (magnitude * phase)[None]

    # Noise in the image domain, which a unitary FFT carries to k-space unchanged in level.
    snr = math.exp(uniform(generator, math.log(r.snr[0]), math.log(r.snr[1])))
    signal = rss(coil_images, dim=0)[inside].mean() if inside.any() else rss(coil_images, dim=0).mean()
    sigma = float(signal) / snr / math.sqrt(maps.shape[0])
    noisy = coil_images + sigma * correlated_noise(tuple(coil_images.shape), generator, r.max_noise_correlation)
    info = {"coils": maps.shape[0], "matrix": shape, "pixel_mm": pixel, "readout_oversampling": oversampling, "snr": snr}
    return fft2c(noisy).to(torch.complex64), info


def _draw_matrix(r: AcquisitionRanges, generator: torch.Generator) -> tuple[tuple[int, int], tuple[float, float], int]:
    """The acquisition's matrix (readout rows, phase-encode columns; even sizes, the readout
    oversampled or not), its pixel size in mm, and the oversampling factor."""
    pe = _even(uniform(generator, *r.phase_encodes))
    ro = _even(pe * uniform(generator, *r.readout_aspect))
    oversampling = 2 if float(torch.rand((), generator=generator)) < r.readout_oversampling else 1
    shrink = min(1.0, math.sqrt(r.max_pixels / (oversampling * ro * pe)))
    pe, ro = _even(pe * shrink), _even(ro * shrink)
    fov_pe = uniform(generator, *r.fov_mm)
    pixel = (fov_pe / pe * uniform(generator, *r.pixel_aspect), fov_pe / pe)
    return (oversampling * ro, pe), pixel, oversampling


def _place_object(image: torch.Tensor, spacing: tuple[float, float], shape: tuple[int, int], pixel: tuple[float, float],
                  r: AcquisitionRanges, generator: torch.Generator) -> torch.Tensor:
    """``image`` on the acquisition's grid at a random orientation (a multiple of 90 degrees and
    a small rotation), flip, scale and smooth deformation, in one resampling; blurred first where
    the new pixels are coarser than the source's (anti-aliasing)."""
    quarter = int(torch.randint(4, (), generator=generator))
    turn = torch.tensor([[0.0, -1.0], [1.0, 0.0]]).matrix_power(quarter)
    matrix = turn @ random_matrix(2, generator, r.max_rotation_deg, r.scale, max_shear=0.03)
    displacement = smooth_displacement(shape, generator, r.max_displacement_mm)
    ratio = [p / s for p, s in zip(pixel, spacing)]
    source = image.to(torch.float32)
    if max(ratio) > 1.2:
        source = GaussianFilter(2, [max(0.4 * q, 1e-3) for q in ratio])(source[None, None])[0, 0]
    grid = warp_grid(shape, pixel, tuple(image.shape), spacing, torch.linalg.inv(matrix), displacement=displacement)
    return sample(source, grid).clamp_min(0)


def _receive_maps(inside: torch.Tensor, pixel: tuple[float, float], r: AcquisitionRanges,
                  generator: torch.Generator) -> torch.Tensor:
    """Sensitivities (coil, H, W) of a random loop array around the object ``inside`` (bool
    (H, W)), computed on a coarse grid (they are smooth), upsampled, and scaled to a median RSS
    of 1 over the object."""
    shape = tuple(inside.shape)
    num_coils = r.coils[int(torch.randint(len(r.coils), (), generator=generator))]
    centres, normals, radii = random_coil_array(num_coils, generator, object_extent(inside, pixel))
    coarse = (max(8, shape[0] // 4), max(8, shape[1] // 4))
    coarse_spacing = (shape[0] * pixel[0] / coarse[0], shape[1] * pixel[1] / coarse[1])
    maps = loop_sensitivities(plane_points(coarse, coarse_spacing), centres, normals, radii)
    maps = torch.view_as_complex(
        F.interpolate(torch.view_as_real(maps).permute(0, 3, 1, 2), size=shape, mode="bicubic", align_corners=False)
        .permute(0, 2, 3, 1).contiguous()
    )
    return maps / rss(maps, dim=0)[inside].median().clamp_min(1e-12) if inside.any() else maps
