"""VoxelMorph run on a coarser grid than the images it registers.

Full-resolution 3D VoxelMorph (160x192x224) takes about 30 s and 10 GB per forward pass on a CPU.
VoxelMorph's own answer is to integrate the velocity field at reduced resolution; here the whole
network runs there: both images are average-pooled by ``factor``, MONAI's `VoxelMorph` (U-Net
backbone, scaling and squaring) predicts a diffeomorphic displacement on the coarse grid, and it
is interpolated back and rescaled to the input grid's voxels. A smooth field loses little by it;
the images are still warped at full resolution.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.networks.nets import VoxelMorph, VoxelMorphUNet
from monai.utils import convert_to_dst_type
from torch import nn

from mribundles.registration.refine import Refinement, refine_velocity

__all__ = ["CoarseVoxelMorph"]


class CoarseVoxelMorph(nn.Module):
    """``forward(moving, fixed) -> ddf``.

    Args:
        channels: the VoxelMorph U-Net's channels, in pairs (down block input, up block output) per
            level: its depth is ``len(channels) // 2``.
        unet_out_channels, final_conv_channels: as MONAI's `VoxelMorphUNet`.
        integration_steps: scaling-and-squaring steps (0: not diffeomorphic).
        factor: pooling factor between the input grid and the network's grid.
        refine: instance-specific optimisation of the predicted velocity before it is integrated
            (`registration.Refinement`, or a mapping of its fields, as a config gives it); None
            or 0 steps for the network alone. Settable after construction.

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
        refine: Refinement | Mapping | None = None,
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
        self.refine = refine if isinstance(refine, Refinement) else Refinement(**(refine or {}))

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        # plain tensors: MONAI engines hand MetaTensors, whose metadata bookkeeping would
        # dominate the refinement loop. The field lies on the fixed grid, so it leaves with the
        # fixed image's metadata, which the writers downstream need (affine, file name).
        geometry = fixed
        moving, fixed = (x.as_tensor() if isinstance(x, MetaTensor) else x for x in (moving, fixed))
        if self.factor > 1:
            moving, fixed = F.avg_pool3d(moving, self.factor), F.avg_pool3d(fixed, self.factor)
        if self.refine.steps > 0 and self.voxelmorph.diffeomorphic:
            velocity = self.voxelmorph.backbone(torch.cat([moving, fixed], dim=1))
            ddf = self.voxelmorph.dvf2ddf(self._refined(velocity, moving, fixed))
        else:
            _, ddf = self.voxelmorph(moving, fixed)
        if self.factor > 1:
            # align_corners=False: coarse voxel i is the mean of fine voxels f*i .. f*i+f-1,
            # centred at f*i + (f-1)/2, which is how avg_pool3d made it.
            ddf = F.interpolate(ddf, scale_factor=self.factor, mode="trilinear", align_corners=False) * self.factor
        if isinstance(geometry, MetaTensor):
            return convert_to_dst_type(ddf, geometry)[0]
        return ddf

    def _refined(self, velocity: torch.Tensor, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        """The network's velocity after the refinement's steps on this pair, made on a grid
        ``refine.factor`` times coarser (velocities are in voxels, so they scale with it)."""
        r, f = self.refine, self.refine.factor
        integration = self.voxelmorph.integration_steps if r.integration_steps is None else r.integration_steps
        settings = dict(steps=r.steps, lr=r.lr, smoothness=r.smoothness, kernel_size=r.kernel_size, integration_steps=integration)
        if f == 1:
            return refine_velocity(velocity, moving, fixed, **settings)
        start = F.avg_pool3d(velocity, f) / f
        refined = refine_velocity(start, F.avg_pool3d(moving, f), F.avg_pool3d(fixed, f), **settings)
        return velocity + F.interpolate(refined - start, scale_factor=f, mode="trilinear", align_corners=False) * f
