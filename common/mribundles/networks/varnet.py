"""End-to-end variational network (Sriram et al., MICCAI 2020) on complex64 tensors.

Each cascade refines multi-coil k-space k with a soft data-consistency step and a learned
regulariser applied to the coil-combined image:

    k <- k - eta * M (k - k0) - F S R(S^H F^H k)

and the sensitivities S are themselves estimated by a U-Net from the calibration region. The
physics (centred FFTs, SENSE expand/reduce, RSS) is the library's; only the learned parts live
here. Working on native complex tensors rather than stacked real pairs avoids the shifts and
permutes that dominate fastMRI's implementation outside its convolutions.
"""

from __future__ import annotations

import torch
from torch import nn

from mribundles.networks.complex_channels import channels_to_complex, complex_to_channels
from mribundles.networks.unet import NormUnet
from mribundles.physics.calibration import calibration_mask
from mribundles.physics.coils import rss, sens_expand, sens_reduce
from mribundles.physics.fft import ifft2c


class SensitivityModel(nn.Module):
    """Coil sensitivities from the calibration region of the sampled k-space.

    Every coil's low-resolution image is refined by one shared U-Net (coils as batch), so the
    model takes any coil count; maps are normalised to unit root-sum-of-squares.
    """

    def __init__(self, chans: int = 8, num_pools: int = 4):
        super().__init__()
        self.norm_unet = NormUnet(2, chans, num_pools)

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, coil, ky, kx) complex, (B, ky, kx) bool -> (B, coil, ky, kx) complex maps."""
        acs = calibration_mask(mask).unsqueeze(-3)
        images = ifft2c(masked_kspace * acs)
        b, c, h, w = images.shape
        refined = self.norm_unet(complex_to_channels(images.reshape(b * c, 1, h, w)))
        maps = channels_to_complex(refined).reshape(b, c, h, w)
        return maps / rss(maps).unsqueeze(-3).clamp_min(1e-12)


class VarNetCascade(nn.Module):
    """One unrolled iteration: soft data consistency plus a U-Net regulariser."""

    def __init__(self, chans: int, num_pools: int):
        super().__init__()
        self.regulariser = NormUnet(2, chans, num_pools)
        self.dc_weight = nn.Parameter(torch.ones(1))

    def forward(
        self, kspace: torch.Tensor, ref_kspace: torch.Tensor, mask: torch.Tensor, sens_maps: torch.Tensor
    ) -> torch.Tensor:
        image = sens_reduce(kspace, sens_maps).unsqueeze(1)
        refined = channels_to_complex(self.regulariser(complex_to_channels(image))).squeeze(1)
        data_term = torch.where(mask, kspace - ref_kspace, 0) * self.dc_weight
        return kspace - data_term - sens_expand(refined, sens_maps)


class VarNet(nn.Module):
    """E2E-VarNet: undersampled multi-coil k-space -> magnitude image.

    Args:
        num_cascades: unrolled iterations.
        chans: first-level channels of each cascade's U-Net.
        pools: down-sampling levels of each cascade's U-Net.
        sens_chans, sens_pools: the same for the sensitivity U-Net.

    Inputs:
        masked_kspace: complex64 (B, coil, ky, kx), zero where not sampled.
        mask: bool (B, ky, kx) or (ky, kx), True where sampled.

    Output:
        float (B, 1, ky, kx): root-sum-of-squares of the reconstructed coil images, on the
        scale of the input k-space. `forward_kspace` returns the multi-coil k-space behind it.
    """

    def __init__(self, num_cascades: int = 12, chans: int = 18, pools: int = 4, sens_chans: int = 8, sens_pools: int = 4):
        super().__init__()
        self.sens_net = SensitivityModel(sens_chans, sens_pools)
        self.cascades = nn.ModuleList(VarNetCascade(chans, pools) for _ in range(num_cascades))

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return rss(ifft2c(self.forward_kspace(masked_kspace, mask))).unsqueeze(1)

    @torch.jit.export
    def forward_kspace(self, masked_kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The reconstructed multi-coil k-space, complex (B, coil, ky, kx), of which `forward`
        returns the RSS image; for losses on k-space samples (SSDU)."""
        mask = mask.to(torch.bool).expand(masked_kspace.shape[0], mask.shape[-2], mask.shape[-1])
        sens_maps = self.sens_net(masked_kspace, mask)
        coil_mask = mask.unsqueeze(1)
        kspace = masked_kspace
        for cascade in self.cascades:
            kspace = cascade(kspace, masked_kspace, coil_mask, sens_maps)
        return kspace
