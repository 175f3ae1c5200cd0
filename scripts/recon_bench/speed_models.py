"""What ``speed`` times: each bundle network with its peer and the size options they share, how
the bundle's network is built with overridden sizes, and the 320x320 benchmark slice."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

import mribundles
from mribundles.bundles import open_bundle
from mribundles.errors import InvalidInputError
from mribundles.physics import calibration_size, make_mask, simulate_multicoil_kspace

from . import REPO

SIZE = 320
# The networks `speed` times, each against its peer: the bundle config that holds `network_def`,
# and the command line's size options with the network_def keys they override.
SPEED_MODELS = {
    "varnet": {
        "config": REPO / "bundles/brain_mri_recon_varnet/configs/inference.json",
        "sizes": {"cascades": "num_cascades", "chans": "chans", "pools": "pools",
                  "sens_chans": "sens_chans", "sens_pools": "sens_pools"},
        "peer": "fastMRI",
    },
    "rvn": {
        "config": REPO / "bundles/brain_mri_recon_rvn/configs/inference.json",
        "sizes": {"steps": "num_steps", "hidden_chans": "hidden_chans", "num_layers": "num_layers",
                  "sens_chans": "sens_chans", "sens_pools": "sens_pools"},
        "peer": "DIRECT",
    },
}
SIZE_OPTIONS = list(dict.fromkeys(option for spec in SPEED_MODELS.values() for option in spec["sizes"]))
# Dilations of our RecurrentVarNet's hidden-state initialiser (HiddenStateInitialiser), given to
# DIRECT's RecurrentInit so that both initialisers see the same context.
RVN_INITIALISER_DILATIONS = (1, 2, 4)
INSTALL_DIRECT = "see the `bench` extra in pyproject.toml: DIRECT installs with --no-deps, then omegaconf"


def speed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=list(SPEED_MODELS), default="varnet",
                        help="varnet: the VarNet bundle against fastMRI's VarNet (default); "
                             "rvn: the RVN bundle against DIRECT's RecurrentVarNet")
    parser.add_argument("--config", type=Path, default=None, help="bundle config holding network_def (default: the model's bundle)")
    for option in SIZE_OPTIONS:
        owners = [model for model, spec in SPEED_MODELS.items() if option in spec["sizes"]]
        parser.add_argument(f"--{option.replace('_', '-')}", type=int, default=None,
                            help=f"override the bundle's value ({'/'.join(owners)})")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per model (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per model first (default 1)")
    parser.add_argument("--coils", type=int, default=8)
    parser.add_argument("--acceleration", type=float, default=4.0)
    parser.add_argument("--center-fraction", type=float, default=0.08)
    parser.add_argument("--seed", type=int, default=0)


def size_overrides(model: str, options: dict[str, int | None], config: Path) -> dict[str, int]:
    """The size options given on the command line -> {network_def key: value} for `model`.

    `options` maps size options ("cascades", "steps", ...) to their values, None where not given.
    An option of the other model raises InvalidInputError naming `config`: ignoring it would
    time sizes the user did not ask for."""
    sizes = SPEED_MODELS[model]["sizes"]
    for option, value in options.items():
        if value is not None and option not in sizes:
            known = ", ".join(f"--{o.replace('_', '-')}" for o in sizes)
            raise InvalidInputError(f"--{option.replace('_', '-')} is no size of --model {model} (its sizes: {known})", config)
    return {sizes[option]: value for option, value in options.items() if value is not None}


def bundle_network(config: Path, overrides: dict[str, int], keys: list[str]) -> tuple[torch.nn.Module, dict[str, int]]:
    """The bundle's `network_def` (``config``: ``<bundle>/configs/<name>.json``), with sizes
    overridden, untrained (speed only), and the sizes (`keys`) it was built with."""
    bundle = open_bundle(config.parent.parent, config=config.name,
                         overrides={f"network_def#{key}": value for key, value in overrides.items()})
    sizes = {key: int(bundle.parser[f"network_def#{key}"]) for key in keys}
    return bundle.get("network_def"), sizes


def benchmark_slice(coils: int, acceleration: float, center_fraction: float, seed: int):
    """Masked k-space and mask of a real slice at 320x320, in our layout and in fastMRI's."""
    volume = np.load(mribundles.sample_data.path("voxelmorph_t1_axial_4slices_80x112.npy"))
    image = torch.from_numpy(volume[1].copy())
    rows = round(image.shape[0] * SIZE / image.shape[1])
    image = F.interpolate(image[None, None], size=(rows, SIZE), mode="bilinear", align_corners=False)[0, 0]
    pad = SIZE - rows
    image = F.pad(image, (0, 0, pad // 2, pad - pad // 2)).clamp_min(0)
    kspace, _ = simulate_multicoil_kspace(image, num_coils=coils, snr_db=30.0, seed=seed)
    mask = make_mask("random1d", (SIZE, SIZE), acceleration, center_fraction, seed)
    masked = (kspace * mask)[None]  # (1, coil, ky, kx) complex64
    ours = (masked, mask[None])  # mask (1, ky, kx) bool
    num_low = calibration_size(mask)[1]  # the fastMRI-centred fully sampled columns
    column = mask[0].reshape(1, 1, 1, SIZE, 1)
    theirs = (torch.view_as_real(masked).contiguous(), column, num_low)
    return ours, theirs
