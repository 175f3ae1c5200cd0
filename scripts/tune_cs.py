#!/usr/bin/env python
"""Choose the L1-wavelet baseline's lamda by grid search on a few TRAINING slices.

For each training file in data/generated/recon_brain/train/*.h5 (k-space simulated from real
brain images; build it with `python scripts/make_recon_dataset.py`), a few evenly spaced slices
are undersampled with random1d masks at 4x (centre fraction 0.08) and 8x (0.04), reconstructed
with `mribundles.baselines.l1_wavelet_recon` for every lamda of the grid, and scored with the
library's fastMRI SSIM against the RSS of the fully sampled k-space (each slice against its own
maximum). lamda is relative to the zero-filled RSS maximum (see baselines/cs.py), so the chosen
value applies to data of any scale. The value with the best mean SSIM over both accelerations
is printed; copy it to DEFAULT_LAMDA in common/mribundles/baselines/cs.py.

    python scripts/tune_cs.py [--data data/generated/recon_brain/train] [--slices-per-file 1]

``--sampling radial`` tunes the radial baseline (`l1_wavelet_radial`, DEFAULT_RADIAL_LAMDA) the
same way on data/generated/recon_brain_radial/train (`make_recon_dataset.py --sampling radial`),
at 64 and 32 golden-angle spokes, against each file's reference image:

    python scripts/tune_cs.py --sampling radial --data data/generated/recon_brain_radial/train
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from mribundles.baselines import l1_wavelet_radial, l1_wavelet_recon
from mribundles.io import kspace_shape, load_kspace
from mribundles.io.radial import read_radial_slice
from mribundles.transforms import GridRadiald
from mribundles.metrics import ssim
from mribundles.physics import ifft2c, make_mask, rss

GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
SETTINGS = ((4, 0.08), (8, 0.04))  # (acceleration, centre fraction) as fastMRI
RADIAL_SPOKES = (64, 32)


def cartesian_cases(file: str, index: int, seed: int, max_iter: int):
    """(setting, target, naive, reconstruct(lamda)) for each Cartesian setting of one slice."""
    kspace = load_kspace(file, slice_index=index)
    target = rss(ifft2c(kspace))
    for acc, cf in SETTINGS:
        mask = make_mask("random1d", kspace.shape[-2:], acc, cf, seed + index)
        yield f"{acc}x", target, rss(ifft2c(kspace * mask)), lambda lam, m=mask: l1_wavelet_recon(kspace, m, lam, max_iter)


def radial_cases(file: str, index: int, seed: int, max_iter: int):
    """The same for the first 64 and 32 spokes of one radial slice; the naive image is gridding."""
    kspace, trajectory, target = read_radial_slice(file, index, reference=True)
    for spokes in RADIAL_SPOKES:
        k, t = kspace[:, :spokes], trajectory[:, :spokes]
        gridded = GridRadiald()({"kspace": k, "trajectory": t})["zero_filled"][0]
        yield f"{spokes} spokes", target, gridded, lambda lam, k=k, t=t: l1_wavelet_radial(k, t, lam, max_iter)


def training_slices(folder: Path, per_file: int) -> list[tuple[str, int]]:
    """(file, slice) pairs: `per_file` evenly spaced interior slices of every file."""
    picks = []
    for path in sorted(folder.glob("*.h5")):
        n = kspace_shape(path)[0]
        picks.extend((str(path), int(i)) for i in np.linspace(0, n - 1, per_file + 2)[1:-1].round())
    return picks


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/generated/recon_brain/train"))
    parser.add_argument("--slices-per-file", type=int, default=1)
    parser.add_argument("--max-iter", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sampling", choices=["cartesian", "radial"], default="cartesian")
    parser.add_argument("--grid", type=float, nargs="+", default=list(GRID), help="lamda values to try")
    args = parser.parse_args(argv)

    picks = training_slices(args.data, args.slices_per_file)
    if not picks:
        raise SystemExit(f"no .h5 files in {args.data}; run python scripts/make_recon_dataset.py")
    print(f"{len(picks)} training slices: " + ", ".join(f"{Path(f).stem}[{i}]" for f, i in picks))
    cases = radial_cases if args.sampling == "radial" else cartesian_cases
    scores, naive = {}, {}
    start = time.perf_counter()
    for file, index in picks:
        for setting, target, naive_image, reconstruct in cases(file, index, args.seed, args.max_iter):
            naive.setdefault(setting, []).append(ssim(target, naive_image))
            for lam in args.grid:
                scores.setdefault((setting, lam), []).append(ssim(target, reconstruct(lam)))

    settings = list(naive)
    print(f"{'lamda':>9} " + " ".join(f"{'SSIM ' + s:>14}" for s in settings) + f" {'mean':>7}")
    print(f"{'naive':>9} " + " ".join(f"{np.mean(naive[s]):14.4f}" for s in settings))
    means = {}
    for lam in args.grid:
        per_setting = [float(np.mean(scores[(s, lam)])) for s in settings]
        means[lam] = float(np.mean(per_setting))
        print(f"{lam:9.0e} " + " ".join(f"{v:14.4f}" for v in per_setting) + f" {means[lam]:7.4f}")
    best = max(means, key=means.get)
    print(f"chosen lamda: {best:g} (max_iter {args.max_iter}, {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
