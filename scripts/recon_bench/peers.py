"""The peers ``speed`` times ours against: fastMRI's VarNet, and DIRECT's RecurrentVarNet made to
do our RecurrentVarNet's whole job (our normalisation and sensitivity maps, then its steps)."""

from __future__ import annotations

import sys
from functools import partial

import torch

from mribundles.physics import ifft2c, rss

from .speed_models import INSTALL_DIRECT, RVN_INITIALISER_DILATIONS, SPEED_MODELS


def direct_rvn_kwargs(sizes: dict[str, int]) -> dict:
    """Our RecurrentVarNet's sizes -> the matching arguments of DIRECT's RecurrentVarNet.

    Per-step weights (`no_parameter_sharing`) as ours has; a learned initialiser of the hidden
    states from the SENSE image through dilated 3x3 convolutions of `hidden_chans` channels, as
    ours. What DIRECT does not let us match: its initialiser's heads end in ReLU (ours tanh), it
    pads by replication (ours zeros), and its GRU gates are 1x1 convolutions (ours 3x3)."""
    return {
        "num_steps": sizes["num_steps"],
        "recurrent_hidden_channels": sizes["hidden_chans"],
        "recurrent_num_layers": sizes["num_layers"],
        "no_parameter_sharing": True,
        "learned_initializer": True,
        "initializer_initialization": "sense",
        "initializer_channels": (sizes["hidden_chans"],) * len(RVN_INITIALISER_DILATIONS),
        "initializer_dilations": RVN_INITIALISER_DILATIONS,
        "initializer_multiscale": 1,
        "normalized": False,
    }


class NormalisedMaps(torch.nn.Module):
    """What our RecurrentVarNet computes before its steps and DIRECT's leaves to its caller:
    the k-space divided by the zero-filled RSS image's maximum, and sensitivity maps estimated
    from it by `sens_net` (E2E-VarNet's `SensitivityModel`, the very module inside ours).

    (B, coil, ky, kx) complex, (B, ky, kx) bool -> (normalised k-space, maps, both
    (B, coil, ky, kx) complex; scale (B, 1, 1, 1))."""

    def __init__(self, sens_net: torch.nn.Module):
        super().__init__()
        self.sens_net = sens_net

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor):
        # The normalisation of RecurrentVarNet._unrolled, so that DIRECT sees the same data scale.
        scale = rss(ifft2c(masked_kspace)).flatten(1).amax(1).clamp_min(1e-12).reshape(-1, 1, 1, 1)
        kspace = masked_kspace / scale
        return kspace, self.sens_net(kspace, mask), scale


class DirectWithOurMaps(torch.nn.Module):
    """DIRECT's RecurrentVarNet made to do our network's whole job: `NormalisedMaps` (our
    normalisation and sensitivity estimation), DIRECT's steps on its layout (zero-copy real
    views: (B, coil, ky, kx, 2) k-space and maps, a (B, 1, ky, kx, 1) mask), then the RSS image of
    the predicted k-space, as DIRECT's RecurrentVarNetEngine computes it, back on the input's scale.

    Inputs as ours: (B, coil, ky, kx) complex, (B, ky, kx) bool. Output float (B, ky, kx)."""

    def __init__(self, rvn: torch.nn.Module, maps: NormalisedMaps):
        super().__init__()
        self.rvn, self.maps = rvn, maps

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        from direct.data.transforms import ifft2, root_sum_of_squares

        kspace, sens_maps, scale = self.maps(masked_kspace, mask)
        predicted = self.rvn(torch.view_as_real(kspace), mask[:, None, :, :, None], torch.view_as_real(sens_maps))
        return root_sum_of_squares(ifft2(predicted, dim=(2, 3)), dim=1) * scale.reshape(-1, 1, 1)


def peer_entries(model: str, ours: torch.nn.Module, sizes: dict[str, int], slice_args) -> dict | None:
    """{name: (module, inputs, what its time includes)} for ours and the peer; the first entry is
    ours, the second the peer it is compared to, any further entry is timed for the report only.
    None (with a message) when the peer's package is missing."""
    (our_args, fastmri_args), peer = slice_args, SPEED_MODELS[model]["peer"]
    if model == "varnet":
        try:
            from fastmri.models import VarNet as FastMRIVarNet
        except ImportError:
            print("fastmri is not installed: pip install --no-deps fastmri (scripts/install.sh --dev)", file=sys.stderr)
            return None
        theirs = FastMRIVarNet(**{key: sizes[key] for key in SPEED_MODELS[model]["sizes"].values()})
        whole = "sensitivity estimation, cascades, RSS"
        return {"mribundles VarNet (bundle)": (ours, our_args, f"ours whole: {whole}"),
                "fastmri.models.VarNet": (theirs, fastmri_args, f"fastMRI's whole: {whole}")}
    try:
        from direct.data.transforms import fft2, ifft2
        from direct.nn.recurrentvarnet.recurrentvarnet import RecurrentVarNet as DirectRVN
    except ImportError as error:
        print(f"DIRECT cannot be imported ({error}): {INSTALL_DIRECT}", file=sys.stderr)
        return None
    # fastMRI's convention, as our ifft2c/fft2c: centred, orthonormal.
    rvn = DirectRVN(partial(fft2, centered=True, normalized=True), partial(ifft2, centered=True, normalized=True),
                    **direct_rvn_kwargs(sizes))
    maps = NormalisedMaps(ours.sens_net)
    return {
        "mribundles RecurrentVarNet (bundle)": (ours, our_args, "ours whole: normalisation, sensitivity estimation, "
                                                "initialiser, steps, RSS"),
        "DIRECT RecurrentVarNet + our maps": (DirectWithOurMaps(rvn, maps), our_args,
                                              "our normalisation and sensitivity estimation (the same module), "
                                              "then DIRECT's initialiser and steps, RSS"),
        "our sensitivity estimation": (maps, our_args, "our normalisation and sensitivity estimation alone, part of both rows above"),
    }
