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
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from mribundles.baselines import l1_wavelet_recon
from mribundles.io import kspace_shape, load_kspace
from mribundles.metrics import ssim
from mribundles.physics import ifft2c, make_mask, rss

GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
SETTINGS = ((4, 0.08), (8, 0.04))  # (acceleration, centre fraction) as fastMRI


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
    args = parser.parse_args(argv)

    picks = training_slices(args.data, args.slices_per_file)
    if not picks:
        raise SystemExit(f"no .h5 files in {args.data}; run python scripts/make_recon_dataset.py")
    print(f"{len(picks)} training slices: " + ", ".join(f"{Path(f).stem}[{i}]" for f, i in picks))
    scores = {(acc, lam): [] for acc, _ in SETTINGS for lam in GRID}
    zero_filled = {acc: [] for acc, _ in SETTINGS}
    start = time.perf_counter()
    for file, index in picks:
        kspace = load_kspace(file, slice_index=index)
        target = rss(ifft2c(kspace))
        for acc, cf in SETTINGS:
            mask = make_mask("random1d", kspace.shape[-2:], acc, cf, args.seed + index)
            zero_filled[acc].append(ssim(target, rss(ifft2c(kspace * mask))))
            for lam in GRID:
                scores[(acc, lam)].append(ssim(target, l1_wavelet_recon(kspace, mask, lam, args.max_iter)))

    header = f"{'lamda':>8} " + " ".join(f"{f'SSIM {acc}x':>9}" for acc, _ in SETTINGS) + f" {'mean':>7}"
    print(header)
    print(f"{'zero-fill':>8} " + " ".join(f"{np.mean(zero_filled[acc]):9.4f}" for acc, _ in SETTINGS))
    means = {}
    for lam in GRID:
        per_acc = [float(np.mean(scores[(acc, lam)])) for acc, _ in SETTINGS]
        means[lam] = float(np.mean(per_acc))
        print(f"{lam:8.0e} " + " ".join(f"{s:9.4f}" for s in per_acc) + f" {means[lam]:7.4f}")
    best = max(means, key=means.get)
    print(f"chosen lamda: {best:g} (max_iter {args.max_iter}, {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
