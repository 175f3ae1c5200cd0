"""The U-Net of the fastMRI baseline and of E2E-VarNet's cascades.

Instance norm, leaky ReLU, average pooling and transposed convolutions, as in Ronneberger et
al. 2015 as adapted by Zbontar et al. 2018 (fastMRI). MONAI's BasicUNet differs (max pooling,
batch norm, a fixed depth), and the published reconstruction baselines and timings are for this
form, so we keep it.
"""

from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn
from torch.nn import functional as F


def _conv_block(in_chans: int, out_chans: int) -> nn.Sequential:
    """Two 3x3 convolutions, each followed by instance norm and leaky ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_chans, out_chans, 3, padding=1, bias=False),
        nn.InstanceNorm2d(out_chans),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False),
        nn.InstanceNorm2d(out_chans),
        nn.LeakyReLU(0.2, inplace=True),
    )


def _up_block(in_chans: int, out_chans: int) -> nn.Sequential:
    """2x upsampling by a transposed convolution, instance norm and leaky ReLU."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_chans, out_chans, 2, stride=2, bias=False),
        nn.InstanceNorm2d(out_chans),
        nn.LeakyReLU(0.2, inplace=True),
    )


class Unet(nn.Module):
    """A 2D U-Net: (B, in_chans, H, W) -> (B, out_chans, H, W).

    H and W must be divisible by 2**num_pools (`NormUnet` pads to that).

    Args:
        in_chans: input channels.
        out_chans: output channels.
        chans: channels of the first level; each level down doubles them.
        num_pools: number of down-sampling levels.
    """

    def __init__(self, in_chans: int, out_chans: int, chans: int = 32, num_pools: int = 4):
        super().__init__()
        widths = [chans * 2**i for i in range(num_pools + 1)]
        self.down = nn.ModuleList([_conv_block(in_chans, widths[0])])
        self.down.extend(_conv_block(widths[i], widths[i + 1]) for i in range(num_pools - 1))
        self.bottleneck = _conv_block(widths[-2], widths[-1])
        self.up = nn.ModuleList(_up_block(widths[i + 1], widths[i]) for i in reversed(range(num_pools)))
        self.merge = nn.ModuleList(_conv_block(2 * widths[i], widths[i]) for i in reversed(range(num_pools)))
        self.head = nn.Conv2d(widths[0], out_chans, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.avg_pool2d(x, 2)
        x = self.bottleneck(x)
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


class NormUnet(nn.Module):
    """A U-Net on instance-normalised input: scale-equivariant and size-agnostic.

    Each channel group is normalised to zero mean and unit standard deviation, padded to a
    multiple of 2**num_pools, passed through the U-Net and mapped back. Normalising makes the
    network independent of the arbitrary scale of raw k-space, which differs between scanners
    by orders of magnitude.

    Args:
        channels: input and output channels (2 for a complex image as real and imaginary).
        chans, num_pools: as for `Unet`.
        residual: add the normalised input to the U-Net's output before mapping back, so the
            U-Net learns a correction (x + std * U(z)) rather than the whole image.
    """

    def __init__(self, channels: int, chans: int = 32, num_pools: int = 4, residual: bool = False):
        super().__init__()
        self.unet = Unet(channels, channels, chans, num_pools)
        self.multiple = 2**num_pools
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) real -> (B, C, H, W) real."""
        z, mean, std, padding = normalise_and_pad(x, self.multiple)
        return crop_and_restore(self.unet(z), z, mean, std, padding, self.residual)


# Two halves around the network, not one function taking it: TorchScript (the bundles'
# ckpt_export) compiles free functions of tensors, not ones that take a module.
def normalise_and_pad(x: torch.Tensor, multiple: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, List[int]]:
    """(B, C, H, W) -> (z, mean, std, padding): each channel at zero mean and unit standard
    deviation, zero-padded to a multiple of ``multiple`` ([left, right, top, bottom])."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    h, w = x.shape[-2], x.shape[-1]
    pad_h, pad_w = -h % multiple, -w % multiple
    padding = [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2]
    return F.pad((x - mean) / std, padding), mean, std, padding


def crop_and_restore(y: torch.Tensor, z: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, padding: List[int],
                     residual: bool = False) -> torch.Tensor:
    """The inverse of `normalise_and_pad` for a network's output ``y`` on the padded grid
    (adding the normalised input ``z`` first when ``residual``)."""
    if residual:
        y = y + z
    h, w = y.shape[-2] - padding[2] - padding[3], y.shape[-1] - padding[0] - padding[1]
    return y[..., padding[2] : padding[2] + h, padding[0] : padding[0] + w] * std + mean
