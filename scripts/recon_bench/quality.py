"""``quality``: every setting's run, its Markdown table, figures and JSON, and the target checks."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from .scoring import run_setting
from .settings import ADAPTED, DATA, settings
from .targets import target_checks


def table_row(row: dict) -> str:
    head = f" {row['psnr_head']:.2f} | {row['nmse_head']:.4f} |" if "psnr_head" in row else " | |"
    return (f"| {row['data']} | {row['sampling']} | {row['method']} | {row['nmse']:.4f} | {row['psnr']:.2f} | "
            f"{row['ssim']:.4f} |{head} {row['seconds_per_slice']:.3f} |")


def quality(args: argparse.Namespace) -> int:
    from mribundles.handlers import save_comparison_png
    from mribundles.io.atomic import atomic_path

    runs = settings(args.data, args.bundles)
    missing = sorted({str(run["file"]) for run in runs if not Path(run["file"]).is_file()})
    if missing:
        print(f"missing data file: {missing[0]} (build it with scripts/make_recon_dataset.py, see --help)", file=sys.stderr)
        return 2
    if not runs:
        print(f"no reconstruction bundle among {args.bundles}", file=sys.stderr)
        return 2
    header = [
        "# Reconstruction benchmark",
        "",
        *(f"- **{name}**: {DATA[name]['about']}" for name in args.data),
        f"- masks seed {args.seed}, fully sampled centre 0.32/R; L1-wavelet: {args.cs_iters} iterations "
        f"(radial {args.radial_cs_iters}), λ tuned per setting on simulated data, and on real data also an ORACLE λ "
        f"picked on the reference (an upper bound for CS); NMSE/PSNR/SSIM as fastMRI's evaluate.py (whole volume); "
        f"on real data also PSNR/NMSE inside a head mask of the reference (`metrics.head_mask`)",
        f"- `{ADAPTED.strip()}`: the bundle after zero-shot self-supervised adaptation on the same undersampled samples "
        f"(no reference); its s/slice is the adaptation's and the reconstruction's",
        f"- seconds per slice on this machine: {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
        f"{'CUDA' if torch.cuda.is_available() else 'no GPU'}; all methods of a setting in the same run",
        "",
        "| data | sampling | method | NMSE | PSNR (dB) | SSIM | PSNR head (dB) | NMSE head | s/slice |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(header), flush=True)
    rows, figures, results, refused = [], [], [], []
    for run in runs:
        methods, panels, refusals = run_setting(run, args)
        refused += refusals
        results.append((run, methods))
        slug = f"{run['data']}_{run['sampling'].lower().replace(' ', '_')}"
        figures.append(args.out / f"{slug}.png")
        save_comparison_png(str(figures[-1]), panels, error_maps=True)
        for method, m in methods.items():
            # per-slice scores stay out of the table and the JSON: the volume figures are the metric
            rows.append({"data": run["data"], "sampling": run["sampling"], "method": method,
                         **{k: v for k, v in m.items() if k not in ("per_slice", "oracle_psnr")}})
            print(table_row(rows[-1]), flush=True)
    checks = target_checks(results) + refused
    report = header + [table_row(r) for r in rows] + ["", "## Targets", "", *(f"- {line}" for line in checks), "",
                               "Figures: " + ", ".join(f"`{f.name}`" for f in figures), ""]
    with atomic_path(args.out / "bench_recon.md") as tmp:
        tmp.write_text("\n".join(report))
    with atomic_path(args.out / "bench_recon.json") as tmp:
        tmp.write_text(json.dumps({"data": {name: DATA[name]["about"] for name in args.data}, "seed": args.seed,
                                   "cs_iters": args.cs_iters, "radial_cs_iters": args.radial_cs_iters,
                                   "rows": rows}, indent=2) + "\n")
    print("\ntargets:\n" + "\n".join(checks))
    print(f"\nwritten: {args.out / 'bench_recon.md'}, bench_recon.json and {len(figures)} figures in {args.out}")
    return 0
