"""The super-resolution network: a residual 3D U-Net on the interpolated low-resolution volume."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets import UNet
from torch import nn


class ResidualUNet3d(nn.Module):
    """``x + U(x)``: a MONAI residual ``UNet`` predicts what interpolation could not restore.

    The input is the LR volume already interpolated onto the HR grid (`transforms.ToHighResGridd`)
    and scaled (`transforms.ScaleIntensityByPercentiled`); the U-Net adds the missing detail.
    Its first level works at half resolution (a strided convolution in, a transposed one out,
    as sub-pixel super-resolution networks do), which keeps a 3D volume affordable on a CPU; a
    ``head_channels``-channel residual unit and a 1x1x1 convolution finish at full resolution.
    That last convolution starts at zero, so an untrained network returns its input. No
    normalisation layers: the statistics of a training patch are not those of a whole volume.
    Sizes that are not multiples of the U-Net's total stride are padded (edge values) and cropped
    back, so any volume goes through whole.

    Input: float (B, 1, x, y, z). Output: float (B, 1, x, y, z).

    Args:
        channels: feature counts per level (MONAI UNet).
        strides: down-sampling per level, one fewer than ``channels``.
        num_res_units: residual units per block.
        head_channels: channels of the full-resolution output block.
    """

    def __init__(
        self,
        channels: Sequence[int] = (32, 64, 128, 256),
        strides: Sequence[int] = (2, 2, 2),
        num_res_units: int = 2,
        head_channels: int = 8,
    ):
        super().__init__()
        self.unet = UNet(
            spatial_dims=3,
            in_channels=1,
            out_channels=head_channels,
            channels=tuple(channels),
            strides=tuple(strides),
            num_res_units=num_res_units,
            norm=None,
        )
        self.head = nn.Conv3d(head_channels, 1, kernel_size=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.multiple = int(math.prod(strides))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # three literal dims, no comprehensions: TorchScript (monai.bundle ckpt_export) takes it
        nx, ny, nz = x.shape[2], x.shape[3], x.shape[4]
        px, py, pz = (-nx) % self.multiple, (-ny) % self.multiple, (-nz) % self.multiple
        padded = F.pad(x, [0, pz, 0, py, 0, px], mode="replicate") if px + py + pz > 0 else x
        residual = self.head(self.unet(padded))[:, :, :nx, :ny, :nz]
        return x + residual
