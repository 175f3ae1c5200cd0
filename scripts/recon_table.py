#!/usr/bin/env python
"""The model cards' quality table: bundles vs zero-filling vs L1-wavelet CS, 1D random masks.

Runs `mribundles evaluate-recon` (`mribundles.evaluation.evaluate_recon`) for every bundle and
acceleration on one fully sampled file and prints a Markdown table. By default the file is the
validation patient of `scripts/make_recon_dataset.py` (pyradiomics brain2, never trained on),
whose k-space is SIMULATED from real images; the table says so.

    python scripts/make_recon_dataset.py --data ../shared/data   # once
    python scripts/recon_table.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mribundles.evaluation import evaluate_recon
from mribundles.io.fastmri_h5 import read_fastmri

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundles", nargs="+", default=["brain_mri_recon_varnet", "brain_mri_recon_unet"])
    parser.add_argument("--kspace", type=Path, default=REPO / "data/generated/recon_brain/val/pyradiomics_brain2.h5")
    parser.add_argument("--accelerations", type=float, nargs="+", default=[4, 8])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    origin = read_fastmri(args.kspace).attrs.get("kspace_origin", "unknown") if args.kspace.suffix == ".h5" else "unknown"
    print(f"data: {args.kspace.name} (k-space origin: {origin}); 1D random masks, centre 0.32/R, seed {args.seed}; "
          "NMSE/PSNR/SSIM as fastMRI's evaluate.py (whole volume)\n")
    print("| R | method | NMSE | PSNR (dB) | SSIM | s/slice |")
    print("|---|---|---|---|---|---|")
    for acceleration in args.accelerations:
        rows = {}
        for index, bundle in enumerate(args.bundles):
            # Zero-filling and CS see the same samples whichever bundle runs: compute them once.
            result = evaluate_recon(REPO / "bundles" / bundle, args.kspace, "random1d", acceleration,
                                    seed=args.seed, baselines=index == 0)
            rows.update(result["methods"])
        baselines_last = sorted(rows.items(), key=lambda row: row[0] in ("zero-filled", "l1-wavelet"))
        for method, m in baselines_last:
            print(f"| {acceleration:g}x | {method} | {m['nmse']:.4f} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['seconds_per_slice']:.3f} |")


if __name__ == "__main__":
    main()
