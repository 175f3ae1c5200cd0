"""What ``quality`` runs: the data sets (simulated, and the REAL in-vivo brain and phantom with
their files), the samplings, the bundles of each, and the targets each setting carries."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import mribundles
from mribundles.evaluation import DEFAULT_CS_ITERS

from . import REPO

CARTESIAN_BUNDLES = ["brain_mri_recon_varnet", "brain_mri_recon_rvn", "brain_mri_recon_unet", "brain_mri_recon_reconresnet"]
RADIAL_BUNDLES = ["brain_mri_recon_reconresnet"]
DATA = {
    "simulated": {
        "about": "validation patient pyradiomics brain2 (23 slices, never trained on), k-space SIMULATED from real images",
        "cartesian": REPO / "data/generated/recon_brain/val/pyradiomics_brain2.h5",
        "radial": REPO / "data/generated/recon_brain_radial/val/pyradiomics_brain2.h5",
    },
    "invivo": {
        "about": "pulseq 16-coil in-vivo brain (one 128x128 slice, whole head; a TEST scan, never trained on), REAL raw k-space, "
                 "retrospectively undersampled, 1D masks on phase-encode",
        "cartesian": mribundles.sample_data.path("pulseq_invivo_brain_16ch_ksp.npy"),  # (coil, readout, phase-encode)
        "radial": None,  # no raw radial k-space exists here
        "real": True,
    },
    "phantom": {
        "about": "pulseq 32-coil GRE phantom (one 64x64 slice), REAL raw k-space, retrospectively undersampled, "
                 "1D masks on phase-encode (a transposed copy of the file)",
        "cartesian": mribundles.sample_data.path("pulseq_phantom_gre_32ch_ksp.npy"),  # (coil, phase-encode, readout)
        "transpose": True,
        "radial": None,
        "real": True,
    },
}
# (label, mask kind, acceleration); the fully sampled centre is evaluate_recon's 0.32/R
CARTESIAN_SETTINGS = [("1D random 4x", "random1d", 4), ("1D random 8x", "random1d", 8), ("2D Poisson 8x", "poisson2d", 8)]
RADIAL_SPOKES = [64, 32]
NAIVE = ("zero-filled", "gridding")
CS = "l1-wavelet"
ORACLE_CS = "l1-wavelet (oracle"  # evaluate_recon names it "l1-wavelet (oracle lambda=...)"
ADAPTED = " + zero-shot SSDU"
MIN_RADIAL_GAIN_DB = 4.0
# Real in-vivo brain, inside the head: (setting, best bundle's gain over zero-filling, over oracle CS)
INVIVO_TARGETS = {"1D random 4x": (3.0, 1.0), "1D random 8x": (None, 3.0)}
MIN_ADAPTATION_GAIN_DB, MAX_ADAPTATION_SECONDS = 3.0, 300.0


def quality_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", nargs="+", choices=list(DATA), default=list(DATA))
    parser.add_argument("--bundles", nargs="+", default=None, help="default: every reconstruction bundle")
    parser.add_argument("--seed", type=int, default=0, help="mask seed, the same for every method")
    parser.add_argument("--cs-iters", type=int, default=DEFAULT_CS_ITERS, help="Cartesian L1-wavelet iterations")
    parser.add_argument("--radial-cs-iters", type=int, default=50,
                        help="radial L1-wavelet iterations (each is a NUFFT pair: 10 s per slice at 50)")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench_recon")


def settings(data: list[str], bundles: list[str] | None) -> list[dict]:
    """Every (data, sampling) to run, with its file, evaluate_recon arguments and bundles."""
    runs = []
    for name in data:
        files = DATA[name]
        cartesian = [b for b in CARTESIAN_BUNDLES if bundles is None or b in bundles]
        radial = [b for b in RADIAL_BUNDLES if bundles is None or b in bundles]
        simulated, real = name == "simulated", files.get("real", False)
        for label, kind, acceleration in CARTESIAN_SETTINGS if cartesian else []:
            runs.append({"data": name, "sampling": label, "file": files["cartesian"], "bundles": cartesian,
                         "kwargs": {"mask": kind, "acceleration": acceleration},
                         "targets": {"min_gain_db": 0.0, "beats_cs": simulated}, "real": real,
                         "transpose": files.get("transpose", False)})
        for spokes in RADIAL_SPOKES if radial and files["radial"] is not None else []:
            runs.append({"data": name, "sampling": f"radial {spokes} spokes", "file": files["radial"], "bundles": radial,
                         "kwargs": {"spokes": spokes},
                         "targets": {"min_gain_db": MIN_RADIAL_GAIN_DB if simulated and spokes == 64 else 0.0,
                                     "beats_cs": False}})
    return runs


def scored_file(setting: dict, out: Path) -> Path:
    """The k-space file a setting scores: the phantom as a transposed copy (phase-encode last)."""
    if not setting.get("transpose"):
        return Path(setting["file"])
    copy = out / f"{Path(setting['file']).stem}_phase_encode_last.npy"
    if not copy.is_file():
        copy.parent.mkdir(parents=True, exist_ok=True)
        np.save(copy, np.ascontiguousarray(np.load(setting["file"]).swapaxes(-1, -2)))
    return copy
