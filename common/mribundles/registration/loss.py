"""The training loss of the registration bundle: image similarity, smoothness, and (when both
label maps are there) label overlap."""

from __future__ import annotations

import torch
from monai.losses import DiceLoss, DiffusionLoss, LocalNormalizedCrossCorrelationLoss
from monai.networks.blocks import Warp
from monai.networks.utils import one_hot
from torch import nn

__all__ = ["RegistrationLoss"]


class RegistrationLoss(nn.Module):
    """``similarity * LNCC(moving o ddf, fixed) + smoothness * |grad ddf|^2 + dice * DiceLoss(labels)``.

    Labels are warped as one-hot maps with bilinear interpolation: a nearest-neighbour warp has
    no gradient (MONAI #8540).

    Args:
        num_classes: label classes including background.
        kernel_size: LNCC window, in voxels.
        smoothness: weight of the diffusion regulariser on the displacement field.
        dice: weight of the label term (semi-supervised VoxelMorph); 0 for unsupervised.
        similarity: weight of the image term; 0 for labels only (SynthMorph's loss, for pairs of
            different contrasts, where no intensity match is meaningful).
    """

    def __init__(self, num_classes: int = 4, kernel_size: int = 9, smoothness: float = 1.0, dice: float = 1.0,
                 similarity: float = 1.0):
        super().__init__()
        self.num_classes, self.smoothness_weight, self.dice_weight = num_classes, smoothness, dice
        self.similarity_weight = similarity
        self.similarity = LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=kernel_size)
        self.smoothness = DiffusionLoss()
        self.dice = DiceLoss(include_background=False)
        self.warp = Warp(mode="bilinear", padding_mode="border")

    def forward(self, ddf: torch.Tensor, target: dict[str, torch.Tensor]) -> torch.Tensor:
        """ddf (B, 3, X, Y, Z); target: ``moving_image``, ``fixed_image`` (B, 1, X, Y, Z) and, optionally,
        integer ``moving_label``, ``fixed_label`` of the same shape."""
        loss = self.smoothness_weight * self.smoothness(ddf)
        if self.similarity_weight:
            loss = loss + self.similarity_weight * self.similarity(self.warp(target["moving_image"], ddf), target["fixed_image"])
        if self.dice_weight and "moving_label" in target and "fixed_label" in target:
            warped = self.warp(one_hot(target["moving_label"].long(), self.num_classes), ddf)
            loss = loss + self.dice_weight * self.dice(warped, one_hot(target["fixed_label"].long(), self.num_classes))
        return loss
