"""VoxelMorph run on a coarser grid than the images it registers.

Full-resolution 3D VoxelMorph (160x192x224) takes about 30 s and 10 GB per forward pass on a CPU.
VoxelMorph's own answer is to integrate the velocity field at reduced resolution; here the whole
network runs there: both images are average-pooled by ``factor``, MONAI's `VoxelMorph` (U-Net
backbone, scaling and squaring) predicts a diffeomorphic displacement on the coarse grid, and it
is interpolated back and rescaled to the input grid's voxels. A smooth field loses little by it;
the images are still warped at full resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.networks.nets import VoxelMorph, VoxelMorphUNet
from monai.utils import convert_to_dst_type
from torch import nn

from mribundles.registration.refine import refine_velocity

__all__ = ["CoarseVoxelMorph"]


class CoarseVoxelMorph(nn.Module):
    """``forward(moving, fixed) -> ddf``.

    Args:
        channels: the VoxelMorph U-Net's channels, in pairs (down block input, up block output) per
            level: its depth is ``len(channels) // 2``.
        unet_out_channels, final_conv_channels: as MONAI's `VoxelMorphUNet`.
        integration_steps: scaling-and-squaring steps (0: not diffeomorphic).
        factor: pooling factor between the input grid and the network's grid.
        refine_steps: instance-specific optimisation steps on the predicted velocity
            (`registration.refine_velocity`) before it is integrated; 0 for the network alone.
            Settable after construction, e.g. from a config.
        refine_lr, refine_smoothness: their step size and regulariser weight.

    Inputs: moving, fixed (B, 1, X, Y, Z), each spatial size divisible by
    ``factor * 2 ** (len(channels) // 2)``. Output: ddf (B, 3, X, Y, Z) in voxels of the input
    grid, to be applied with MONAI's `Warp` (``moving(x + ddf(x))``).
    """

    def __init__(
        self,
        channels: tuple[int, ...] = (16, 32, 32, 32, 32, 32),
        unet_out_channels: int = 16,
        final_conv_channels: tuple[int, ...] = (16,),
        integration_steps: int = 7,
        factor: int = 2,
        refine_steps: int = 0,
        refine_lr: float = 0.1,
        refine_smoothness: float = 1.0,
    ):
        super().__init__()
        backbone = VoxelMorphUNet(
            spatial_dims=3,
            in_channels=2,
            unet_out_channels=unet_out_channels,
            channels=channels,
            final_conv_channels=final_conv_channels,
        )
        self.voxelmorph = VoxelMorph(backbone=backbone, integration_steps=integration_steps, spatial_dims=3)
        self.factor = factor
        self.refine_steps, self.refine_lr, self.refine_smoothness = refine_steps, refine_lr, refine_smoothness

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        # plain tensors: MONAI engines hand MetaTensors, whose metadata bookkeeping would
        # dominate the refinement loop. The field lies on the fixed grid, so it leaves with the
        # fixed image's metadata, which the writers downstream need (affine, file name).
        geometry = fixed
        moving, fixed = (x.as_tensor() if isinstance(x, MetaTensor) else x for x in (moving, fixed))
        if self.factor > 1:
            moving, fixed = F.avg_pool3d(moving, self.factor), F.avg_pool3d(fixed, self.factor)
        if self.refine_steps > 0 and self.voxelmorph.diffeomorphic:
            velocity = self.voxelmorph.backbone(torch.cat([moving, fixed], dim=1))
            velocity = refine_velocity(velocity, moving, fixed, self.refine_steps, self.refine_lr, self.refine_smoothness)
            ddf = self.voxelmorph.dvf2ddf(velocity)
        else:
            _, ddf = self.voxelmorph(moving, fixed)
        if self.factor > 1:
            # align_corners=False: coarse voxel i is the mean of fine voxels f*i .. f*i+f-1,
            # centred at f*i + (f-1)/2, which is how avg_pool3d made it.
            ddf = F.interpolate(ddf, scale_factor=self.factor, mode="trilinear", align_corners=False) * self.factor
        if isinstance(geometry, MetaTensor):
            return convert_to_dst_type(ddf, geometry)[0]
        return ddf
