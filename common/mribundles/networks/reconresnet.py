"""A ReconResNet-style network for Cartesian and radial multi-coil k-space.

Written from the description in Chatterjee, Breitkopf, Sarasaen et al., "ReconResNet:
Regularised residual learning for MR image reconstruction of undersampled Cartesian and radial
data" (Computers in Biology and Medicine, 2022): a residual network in the style of Johnson et
al.'s image-transformation network (a wide convolution, two strided convolutions down, residual
blocks, two transposed convolutions up, a wide convolution out) regularises the undersampled
image, and a data-consistency step pulls its result back towards the measured samples. Our
version works on the coil-combined complex image (real and imaginary parts as two channels) and
takes its data consistency from the library's operators, so one network serves both samplings:

    x0 = A^H W y                   zero-filled (Cartesian, W = 1) or gridded (radial, W = density)
    x1 = x0 + R(x0)                residual regularisation, instance-normalised
    x  = x1 + lambda A^H W (y - A x1)   one learned gradient step towards the data

A = M F S (`physics.operators.MultiCoilOperator`) or NUFFT S (`physics.radial`), with the
sensitivities S estimated from the centre of k-space that both samplings measure densely.
"""

from __future__ import annotations

import torch
from torch import nn

from mribundles.networks.complex_channels import channels_to_complex, complex_to_channels
from mribundles.networks.unet import crop_and_restore, normalise_and_pad
from mribundles.physics.calibration import calibration_mask
from mribundles.physics.coils import rss
from mribundles.physics.fft import ifft2c
from mribundles.physics.operators import MultiCoilOperator
from mribundles.physics.radial import RadialMultiCoilOperator, density_compensation, radial_sensitivities

__all__ = ["ReconResNet", "ResNetRegulariser"]

SAMPLINGS = ("cartesian", "radial")


class ResidualBlock(nn.Module):
    """conv 3x3 - instance norm - PReLU - dropout - conv 3x3 - instance norm, plus the input."""

    def __init__(self, chans: int, dropout: float):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(chans, chans, 3, padding=1), nn.InstanceNorm2d(chans), nn.PReLU(chans), nn.Dropout2d(dropout),
            nn.Conv2d(chans, chans, 3, padding=1), nn.InstanceNorm2d(chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class ResNetRegulariser(nn.Module):
    """Real (B, 2, H, W) -> (B, 2, H, W): Johnson-style residual network at a quarter of the
    resolution, ``chans`` channels at full resolution and 4 * ``chans`` in the residual blocks.
    Dropout in the blocks is the "regularised" of ReconResNet."""

    multiple = 4  # two stride-2 convolutions

    def __init__(self, chans: int = 32, num_blocks: int = 8, dropout: float = 0.1):
        super().__init__()

        def down(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.InstanceNorm2d(cout), nn.PReLU(cout)]

        def up(cin: int, cout: int) -> list[nn.Module]:
            return [nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1), nn.InstanceNorm2d(cout), nn.PReLU(cout)]

        self.layers = nn.Sequential(
            nn.Conv2d(2, chans, 7, padding=3), nn.InstanceNorm2d(chans), nn.PReLU(chans),
            *down(chans, 2 * chans), *down(2 * chans, 4 * chans),
            *(ResidualBlock(4 * chans, dropout) for _ in range(num_blocks)),
            *up(4 * chans, 2 * chans), *up(2 * chans, chans),
            nn.Conv2d(chans, 2, 7, padding=3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ReconResNet(nn.Module):
    """Multi-coil k-space -> magnitude image (B, 1, H, W), for one kind of ``sampling``.

    ``sampling="cartesian"``: ``forward(masked_kspace, mask)`` with complex (B, coil, ky, kx)
    k-space and a bool (B, ky, kx) mask, like `VarNet`; the sensitivities come from the fully
    sampled calibration box (`physics.calibration_mask`).

    ``sampling="radial"``: ``forward(kspace, trajectory)`` with complex (B, coil, spokes, readout)
    k-space and the float (2, spokes, readout) golden-angle trajectory that every item of the
    batch shares (a batch may also repeat it: (B, 2, spokes, readout)). The image is the square
    field of view that the readout samples: readout / ``oversampling`` pixels a side. The
    sensitivities come from the samples within ``calib_radius`` pixels of the centre.
    """

    def __init__(self, sampling: str = "cartesian", chans: int = 32, num_blocks: int = 8, dropout: float = 0.1,
                 oversampling: int = 2, calib_radius: float = 12.0):
        super().__init__()
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
        self.sampling, self.oversampling, self.calib_radius = sampling, oversampling, calib_radius
        self.regulariser = ResNetRegulariser(chans, num_blocks, dropout)
        self.dc_weight = nn.Parameter(torch.ones(1))

    def forward(self, kspace: torch.Tensor, sampling: torch.Tensor) -> torch.Tensor:
        if self.sampling == "radial":
            operator, weights = self._radial_operator(kspace, sampling)
            kspace = kspace.flatten(-2)
        else:
            operator, weights = self._cartesian_operator(kspace, sampling), 1.0
        image = operator.adjoint(kspace * weights)  # (B, H, W)
        z, mean, std, padding = normalise_and_pad(complex_to_channels(image[:, None]), ResNetRegulariser.multiple)
        refined = image + channels_to_complex(crop_and_restore(self.regulariser(z), z, mean, std, padding))[:, 0]
        refined = refined + self.dc_weight * operator.adjoint((kspace - operator.forward(refined)) * weights)
        return refined.abs()[:, None]

    def _cartesian_operator(self, kspace: torch.Tensor, mask: torch.Tensor) -> MultiCoilOperator:
        mask = mask.to(torch.bool).expand(kspace.shape[0], *mask.shape[-2:])
        low_res = ifft2c(kspace * calibration_mask(mask)[:, None])
        return MultiCoilOperator(low_res / rss(low_res).unsqueeze(-3).clamp_min(1e-12), mask)

    def _radial_operator(self, kspace: torch.Tensor, trajectory: torch.Tensor):
        if trajectory.ndim == 4:  # collated: one trajectory per item, all the same
            trajectory = trajectory[0]
        if trajectory.shape != (2, *kspace.shape[-2:]):
            raise ValueError(f"trajectory {tuple(trajectory.shape)} does not match radial k-space {tuple(kspace.shape)}: "
                             "expected (2, spokes, readout)")
        spokes, readout = kspace.shape[-2:]
        size = readout // self.oversampling
        maps = radial_sensitivities(kspace, trajectory, self.oversampling, self.calib_radius)
        weights = density_compensation(spokes, readout, (size, size)).to(kspace.device)
        return RadialMultiCoilOperator(maps, trajectory.reshape(2, -1)), weights

