"""The image-domain U-Net baseline: zero-filled magnitude image -> reconstructed image."""

from __future__ import annotations

import torch
from torch import nn

from mribundles.networks.unet import NormUnet


class ImageUnet(nn.Module):
    """fastMRI's U-Net baseline on the zero-filled root-sum-of-squares image.

    Normalised (`NormUnet`) so that the raw k-space scale does not matter, and residual in the
    normalised domain, since the zero-filled image is already the right image minus aliasing:
    an untrained network returns its input.

    Input: float (B, 1, H, W). Output: float (B, 1, H, W), on the input's scale.
    """

    def __init__(self, chans: int = 32, num_pools: int = 4):
        super().__init__()
        self.norm_unet = NormUnet(1, chans, num_pools, residual=True)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.norm_unet(image)
