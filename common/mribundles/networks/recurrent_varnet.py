"""Recurrent Variational Network (Yiasemis et al., CVPR 2022) on complex64 tensors.

Like E2E-VarNet it unrolls gradient steps on multi-coil k-space k,

    k <- k - alpha_t M (k - k0) + F S R_t(S^H F^H k, h),

but the regulariser R_t is a recurrent convolutional network: convolutions interleaved with
convolutional GRU cells whose hidden states h carry what earlier steps learned about the
image to later ones, and a small dilated network initialises h from the first image. Every
step has its own weights (the paper's best variant); only the hidden state is shared. The
sensitivities are estimated by E2E-VarNet's `SensitivityModel` from the calibration region.

Written from the paper's description; the physics (centred FFTs, SENSE expand/reduce, RSS) is
the library's.
"""

from __future__ import annotations

from typing import List

import torch
from torch import nn

from mribundles.networks.complex_channels import channels_to_complex, complex_to_channels
from mribundles.networks.varnet import SensitivityModel
from mribundles.physics.coils import rss, sens_expand, sens_reduce
from mribundles.physics.fft import ifft2c


class ConvGRUCell(nn.Module):
    """A gated recurrent unit whose gates are 3x3 convolutions (Ballas et al., 2016).

    h' = (1 - z) h + z tanh(W [x, r h]), with update z and reset r gates from [x, h].
    """

    def __init__(self, in_chans: int, hidden_chans: int):
        super().__init__()
        self.gates = nn.Conv2d(in_chans + hidden_chans, 2 * hidden_chans, 3, padding=1)
        self.candidate = nn.Conv2d(in_chans + hidden_chans, hidden_chans, 3, padding=1)

    def forward(self, x: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """x (B, in, H, W), hidden (B, hidden, H, W) -> the new hidden state."""
        update, reset = torch.sigmoid(self.gates(torch.cat([x, hidden], 1))).chunk(2, dim=1)
        candidate = torch.tanh(self.candidate(torch.cat([x, reset * hidden], 1)))
        return (1 - update) * hidden + update * candidate


class RecurrentLayer(nn.Module):
    """A dilated convolution and ReLU, then a ConvGRU cell: (features, hidden) -> new hidden,
    which is also the layer's output to the next layer."""

    def __init__(self, in_chans: int, hidden_chans: int, kernel_size: int, dilation: int):
        super().__init__()
        padding = dilation * (kernel_size - 1) // 2
        self.conv = nn.Sequential(nn.Conv2d(in_chans, hidden_chans, kernel_size, padding=padding, dilation=dilation), nn.ReLU())
        self.gru = ConvGRUCell(hidden_chans, hidden_chans)

    def forward(self, x: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        return self.gru(self.conv(x), hidden)


class RecurrentRegulariser(nn.Module):
    """The learned part of one step: image (B, 2, H, W) and one hidden state per layer ->
    an image update (B, 2, H, W) and the new hidden states.

    Receptive fields grow through the layers: a 5x5 first convolution, then 3x3 ones dilated
    by 2, 1, 2, ...
    """

    def __init__(self, hidden_chans: int, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(
            RecurrentLayer(2 if i == 0 else hidden_chans, hidden_chans, 5 if i == 0 else 3, 1 if i % 2 == 0 else 2)
            for i in range(num_layers)
        )
        self.head = nn.Conv2d(hidden_chans, 2, 3, padding=1)

    def forward(self, image: torch.Tensor, hidden: List[torch.Tensor]) -> tuple[torch.Tensor, List[torch.Tensor]]:
        x = image
        new_hidden: List[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            x = layer(x, hidden[i])
            new_hidden.append(x)
        return self.head(x), new_hidden


class HiddenStateInitialiser(nn.Module):
    """The first hidden states from the first image: a few dilated 3x3 convolutions (dilations
    1, 2, 4) for context, then a 1x1 convolution per recurrent layer."""

    def __init__(self, hidden_chans: int, num_layers: int):
        super().__init__()
        layers: List[nn.Module] = []
        for i, dilation in enumerate((1, 2, 4)):
            layers += [nn.Conv2d(2 if i == 0 else hidden_chans, hidden_chans, 3, padding=dilation, dilation=dilation), nn.ReLU()]
        self.context = nn.Sequential(*layers)
        self.heads = nn.ModuleList(nn.Conv2d(hidden_chans, hidden_chans, 1) for _ in range(num_layers))

    def forward(self, image: torch.Tensor) -> List[torch.Tensor]:
        context = self.context(image)
        return [torch.tanh(head(context)) for head in self.heads]


class RecurrentVarNetStep(nn.Module):
    """One unrolled step: soft data consistency plus the recurrent regulariser."""

    def __init__(self, hidden_chans: int, num_layers: int):
        super().__init__()
        self.regulariser = RecurrentRegulariser(hidden_chans, num_layers)
        self.dc_weight = nn.Parameter(torch.ones(1))

    def forward(
        self, kspace: torch.Tensor, ref_kspace: torch.Tensor, mask: torch.Tensor, sens_maps: torch.Tensor,
        hidden: List[torch.Tensor],
    ) -> tuple[torch.Tensor, List[torch.Tensor]]:
        image = complex_to_channels(sens_reduce(kspace, sens_maps).unsqueeze(1))
        update, hidden = self.regulariser(image, hidden)
        data_term = torch.where(mask, kspace - ref_kspace, 0) * self.dc_weight
        return kspace - data_term + sens_expand(channels_to_complex(update).squeeze(1), sens_maps), hidden


class RecurrentVarNet(nn.Module):
    """Recurrent VarNet: undersampled multi-coil k-space -> magnitude image.

    Args:
        num_steps: unrolled steps, each with its own weights (the paper's T).
        hidden_chans: channels of every recurrent layer and of the hidden states.
        num_layers: recurrent layers per step.
        sens_chans, sens_pools: the sensitivity U-Net's first-level channels and levels.

    Inputs:
        masked_kspace: complex64 (B, coil, ky, kx), zero where not sampled.
        mask: bool (B, ky, kx) or (ky, kx), True where sampled.

    Output:
        float (B, 1, ky, kx): root-sum-of-squares of the reconstructed coil images, on the
        scale of the input k-space. The input is divided by the zero-filled image's maximum
        and the output multiplied back (every other operation is linear in the data, so the
        network is scale-equivariant), because recurrent units, unlike VarNet's normalised
        U-Nets, see the image at its own scale. `forward_kspace` returns the multi-coil k-space
        behind it.
    """

    def __init__(self, num_steps: int = 8, hidden_chans: int = 16, num_layers: int = 3, sens_chans: int = 4, sens_pools: int = 4):
        super().__init__()
        self.sens_net = SensitivityModel(sens_chans, sens_pools)
        self.initialiser = HiddenStateInitialiser(hidden_chans, num_layers)
        self.steps = nn.ModuleList(RecurrentVarNetStep(hidden_chans, num_layers) for _ in range(num_steps))

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        kspace, scale = self._unrolled(masked_kspace, mask)
        return rss(ifft2c(kspace)).unsqueeze(1) * scale

    @torch.jit.export
    def forward_kspace(self, masked_kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The reconstructed multi-coil k-space, complex (B, coil, ky, kx) on the input's scale,
        of which `forward` returns the RSS image; for losses on k-space samples (SSDU)."""
        kspace, scale = self._unrolled(masked_kspace, mask)
        return kspace * scale

    def _unrolled(self, masked_kspace: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The unrolled steps on the normalised k-space -> (its result (B, coil, ky, kx), the
        normalising scale (B, 1, 1, 1)). The scale is applied by the caller, after the RSS in
        `forward`, so that `forward` stays what it always computed."""
        mask = mask.to(torch.bool).expand(masked_kspace.shape[0], mask.shape[-2], mask.shape[-1])
        scale = rss(ifft2c(masked_kspace)).flatten(1).amax(1).clamp_min(1e-12).reshape(-1, 1, 1, 1)
        ref_kspace = masked_kspace / scale
        sens_maps = self.sens_net(ref_kspace, mask)
        hidden = self.initialiser(complex_to_channels(sens_reduce(ref_kspace, sens_maps).unsqueeze(1)))
        coil_mask = mask.unsqueeze(1)
        kspace = ref_kspace
        for step in self.steps:
            kspace, hidden = step(kspace, ref_kspace, coil_mask, sens_maps, hidden)
        return kspace, scale
