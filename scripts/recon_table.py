#!/usr/bin/env python
"""The model cards' quality table: bundles vs zero-filling vs L1-wavelet CS, 1D random masks.

Runs `mribundles evaluate-recon` (`mribundles.evaluation.evaluate_recon`) for every bundle and
acceleration on one fully sampled file and prints a Markdown table. By default the file is the
validation patient of `scripts/make_recon_dataset.py` (pyradiomics brain2, never trained on),
whose k-space is SIMULATED from real images; the table says so.

    python scripts/make_recon_dataset.py --data ../shared/data   # once
    python scripts/recon_table.py

``--radial`` scores the radial bundles instead, at 64 and 32 golden-angle spokes, against
gridding and radial L1-wavelet CS, on the same patient's radial file
(`make_recon_dataset.py --sampling radial`), and writes each comparison figure to ``--figures``:

    python scripts/make_recon_dataset.py --sampling radial --out data/generated/recon_brain_radial   # once
    python scripts/recon_table.py --radial
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mribundles.evaluation import DEFAULT_CS_ITERS, evaluate_recon
from mribundles.io.fastmri_h5 import read_fastmri

REPO = Path(__file__).resolve().parents[1]
CARTESIAN_BUNDLES = ["brain_mri_recon_varnet", "brain_mri_recon_unet", "brain_mri_recon_reconresnet"]
RADIAL_BUNDLES = ["brain_mri_recon_reconresnet"]
CARTESIAN_VAL = REPO / "data/generated/recon_brain/val/pyradiomics_brain2.h5"
RADIAL_VAL = REPO / "data/generated/recon_brain_radial/val/pyradiomics_brain2.h5"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundles", nargs="+", default=None, help="default: the Cartesian bundles (with --radial: the radial one)")
    parser.add_argument("--kspace", type=Path, default=None, help="default: the validation patient's file of the sampling")
    parser.add_argument("--accelerations", type=float, nargs="+", default=[4, 8])
    parser.add_argument("--mask", default="random1d", help="retrospective mask kind (random1d, poisson2d, ...)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cs-iters", type=int, default=DEFAULT_CS_ITERS, help="iterations of the L1-wavelet baseline")
    parser.add_argument("--radial", action="store_true", help="the radial bundles on the radial validation file")
    parser.add_argument("--spokes", type=int, nargs="+", default=[64, 32])
    parser.add_argument("--figures", type=Path, default=REPO / "results" / "recon_table")
    args = parser.parse_args()
    if args.radial:
        radial_table(args.bundles or RADIAL_BUNDLES, args.kspace or RADIAL_VAL, args)
        return
    args.bundles, args.kspace = args.bundles or CARTESIAN_BUNDLES, args.kspace or CARTESIAN_VAL

    origin = read_fastmri(args.kspace).attrs.get("kspace_origin", "unknown") if args.kspace.suffix == ".h5" else "unknown"
    print(f"data: {args.kspace.name} (k-space origin: {origin}); {args.mask} masks, centre 0.32/R, seed {args.seed}; "
          "NMSE/PSNR/SSIM as fastMRI's evaluate.py (whole volume)\n")
    print("| R | method | NMSE | PSNR (dB) | SSIM | s/slice |")
    print("|---|---|---|---|---|---|")
    for acceleration in args.accelerations:
        rows = {}
        for index, bundle in enumerate(args.bundles):
            # Zero-filling and CS see the same samples whichever bundle runs: compute them once.
            result = evaluate_recon(REPO / "bundles" / bundle, args.kspace, args.mask, acceleration,
                                    seed=args.seed, baselines=index == 0, cs_iters=args.cs_iters)
            rows.update(result["methods"])
        baselines_last = sorted(rows.items(), key=lambda row: row[0] in ("zero-filled", "l1-wavelet"))
        for method, m in baselines_last:
            print(f"| {acceleration:g}x | {method} | {m['nmse']:.4f} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['seconds_per_slice']:.3f} |")


def radial_table(bundles: list[str], kspace: Path, args: argparse.Namespace) -> None:
    import h5py

    with h5py.File(kspace, "r") as hf:
        origin = hf.attrs.get("kspace_origin", "unknown")
    print(f"data: {kspace.name} (k-space origin: {origin}); golden-angle radial, reference = the file's image; "
          f"L1-wavelet {args.cs_iters} iterations; NMSE/PSNR/SSIM as fastMRI's evaluate.py (whole volume)\n")
    print("| spokes | method | NMSE | PSNR (dB) | SSIM | s/slice |")
    print("|---|---|---|---|---|---|")
    for spokes in args.spokes:
        rows = {}
        for index, bundle in enumerate(bundles):
            figure = args.figures / f"{bundle}_{kspace.stem}_{spokes}spokes.png"
            result = evaluate_recon(REPO / "bundles" / bundle, kspace, spokes=spokes, baselines=index == 0, figure=figure,
                                    cs_iters=args.cs_iters)
            rows.update(result["methods"])
        for method, m in sorted(rows.items(), key=lambda row: row[0] in ("gridding", "l1-wavelet")):
            print(f"| {spokes} | {method} | {m['nmse']:.4f} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['seconds_per_slice']:.3f} |")
    print(f"\nfigures: {args.figures}")


if __name__ == "__main__":
    main()
