"""Random smooth diffeomorphisms: how training pairs are made from one real brain."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import DVF2DDF

__all__ = ["random_diffeomorphism"]


def random_diffeomorphism(
    spatial_shape: Sequence[int],
    max_std: float,
    control_spacing: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A random displacement field (1, 3, X, Y, Z), in voxels, that is invertible by construction.

    A stationary velocity field is drawn as Gaussian noise on a coarse control grid (one point
    every ``control_spacing`` voxels, standard deviation uniform in [0, ``max_std``] voxels),
    interpolated to the full grid and integrated by scaling and squaring (MONAI's `DVF2DDF`):
    smooth, large where the draw is large, and free of folding, like the differences between
    two affinely aligned brains.
    """
    coarse = [max(2, -(-n // control_spacing) + 1) for n in spatial_shape]
    std = float(torch.rand((), generator=generator)) * max_std
    noise = torch.randn((1, 3, *coarse), generator=generator) * std
    velocity = F.interpolate(noise.to(device), size=list(spatial_shape), mode="trilinear", align_corners=True)
    return DVF2DDF(num_steps=7, mode="bilinear", padding_mode="border")(velocity)
