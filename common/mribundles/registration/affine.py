"""Affine pre-alignment by intensity optimisation, on the tensors' device.

VoxelMorph registers images that are already affinely aligned. Two brains in world coordinates
differ by position, size and tilt; this step removes that with a 12-parameter affine map fitted
coarse to fine (8 mm, then 4 mm on a 1 mm grid: finer levels change the overlap of tissue labels by under 0.01 Dice for twice the time) by gradient descent on the global normalised
cross-correlation, after matching the centres of mass. Both T1-weighted: NCC is the right
similarity and costs one pass, unlike mutual information's histograms.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["affine_align", "affine_ddf"]


def _normalised_centre_of_mass(image: torch.Tensor) -> torch.Tensor:
    """(B, 1, X, Y, Z) -> (B, 3) centre of intensity in `affine_grid` coordinates (x, y, z order
    reversed, as `grid_sample` reads them: last spatial axis first), each in [-1, 1]."""
    weights = image.clamp_min(0).flatten(2).squeeze(1)  # (B, N)
    axes = [torch.linspace(-1 + 1 / n, 1 - 1 / n, n, device=image.device) for n in image.shape[2:]]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)  # (N, 3), array order
    centre = weights @ grid / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return centre.flip(-1)


def _ncc(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a.flatten(1) - a.flatten(1).mean(dim=1, keepdim=True)
    b = b.flatten(1) - b.flatten(1).mean(dim=1, keepdim=True)
    return ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)).mean()


def affine_align(
    moving: torch.Tensor,
    fixed: torch.Tensor,
    scales: Sequence[int] = (8, 4),
    steps: Sequence[int] = (100, 30),
    lr: float = 0.01,
) -> torch.Tensor:
    """Fit the affine map that best aligns ``moving`` to ``fixed``.

    Args:
        moving, fixed: (B, 1, X, Y, Z) on the same grid, intensities on a common scale; each
            spatial size divisible by every scale.
        scales: average-pooling factors, coarse to fine.
        steps: Adam iterations at each scale.

    Returns:
        theta (B, 3, 4): `torch.nn.functional.affine_grid` parameters (``align_corners=False``)
        mapping fixed coordinates to moving ones; apply with `affine_ddf`.
    """
    with torch.enable_grad():
        # the centres of mass of the finest level's pooled images: within half a pooled voxel of
        # the full-resolution ones, which is close enough for the optimisation's start, at a
        # small fraction of their cost
        finest = scales[-1]
        shift = _normalised_centre_of_mass(F.avg_pool3d(moving, finest)) - _normalised_centre_of_mass(F.avg_pool3d(fixed, finest))
        eye = torch.eye(3, 4, device=moving.device, dtype=moving.dtype)
        theta = eye.repeat(moving.shape[0], 1, 1)
        theta[:, :, 3] = shift
        theta.requires_grad_(True)
        optimiser = torch.optim.Adam([theta], lr=lr)
        for scale, n in zip(scales, steps):
            m, f = F.avg_pool3d(moving, scale), F.avg_pool3d(fixed, scale)
            for _ in range(n):
                warped = F.grid_sample(m, F.affine_grid(theta, list(f.shape), align_corners=False), align_corners=False)
                loss = -_ncc(warped, f)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
    return theta.detach()


def affine_ddf(theta: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    """The displacement field (B, 3, X, Y, Z), in voxels, of the affine map ``theta`` on a grid
    of ``spatial_shape``: MONAI's `Warp` with it samples what ``grid_sample`` with
    ``affine_grid(theta)`` would."""
    shape = [theta.shape[0], 1, *spatial_shape]
    grid = F.affine_grid(theta, shape, align_corners=False).flip(-1)  # array axis order
    sizes = torch.tensor(spatial_shape, dtype=theta.dtype, device=theta.device)
    voxels = ((grid + 1) * sizes - 1) / 2  # align_corners=False -> voxel index
    identity = torch.stack(
        torch.meshgrid(*[torch.arange(n, dtype=theta.dtype, device=theta.device) for n in spatial_shape], indexing="ij"),
        dim=-1,
    )
    return (voxels - identity).movedim(-1, 1)
