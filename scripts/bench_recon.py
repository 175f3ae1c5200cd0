#!/usr/bin/env python
"""The collection's reconstruction benchmark: quality and seconds per slice of every bundle, and
the VarNet bundle's speed against fastMRI's.

``quality``: every reconstruction bundle against zero-filling (radial: gridding) and the tuned
L1-wavelet CS baseline, through `mribundles.evaluation.evaluate_recon`, so all methods of a
setting see exactly the same samples:

- data **simulated**: the validation patient of `scripts/make_recon_dataset.py` (pyradiomics
  brain2, 23 slices, never trained on); its k-space is SIMULATED from real images. Cartesian:
  1D random 4x and 8x (centre 0.32/R) and 2D Poisson 8x; radial (bundles with a ``sampling``
  switch): the first 64 and 32 golden-angle spokes.
- data **phantom**: REAL raw k-space, the pulseq 32-coil GRE phantom shipped in
  `mribundles.sample_data` (one 64x64 slice), retrospectively undersampled by the same masks.

NMSE/PSNR/SSIM as fastMRI's `evaluate.py` (whole volume). It writes a Markdown table
(``bench_recon.md``) and per setting a PNG of the middle slice (reference, zero-filled or
gridding, each bundle, CS, and their error maps) under ``--out``, prints the table, and checks
the targets of the collection: every bundle beats zero-filling everywhere, beats CS in PSNR at
every Cartesian setting (4x and 8x) on the simulated data and is faster than CS; the radial
bundle beats gridding by 4 dB at 64 spokes. The rows are also written as ``bench_recon.json``.

``speed``: the VarNet bundle's network (its `network_def`) against `fastmri.models.VarNet` with
the same num_cascades, chans, pools, sens_chans and sens_pools, on the same 320x320 slice: the
shipped real T1 slice (voxelmorph), resized to 320 columns and zero-padded to 320 rows, 8-coil
k-space SIMULATED from it, undersampled by a 4x random column mask. fastMRI gets it in its own
layout (stacked real/imaginary last dimension, a (1, 1, 1, kx, 1) column mask, the number of
central low frequencies). Both run in eval mode under `torch.inference_mode` with the same
thread count; after a warm-up the runs are interleaved (ours, fastMRI, fastMRI, ours, ...) so
that load drifting on the machine hits both alike, and the median of ``--repeats`` runs is
reported. The target is ratio (ours / fastMRI) <= 1.0.

    python scripts/make_recon_dataset.py --data ../shared/data                                      # once
    python scripts/make_recon_dataset.py --sampling radial --out data/generated/recon_brain_radial  # once
    python scripts/bench_recon.py                       # quality, then speed, with their defaults
    python scripts/bench_recon.py quality --data phantom --bundles brain_mri_recon_rvn
    python scripts/bench_recon.py speed --cascades 12 --chans 18 --sens-chans 8   # fastMRI's sizes
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser
from torch.nn import functional as F

import mribundles
from mribundles.evaluation import DEFAULT_CS_ITERS, evaluate_recon
from mribundles.physics import calibration_size, make_mask, simulate_multicoil_kspace

REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------
# quality

CARTESIAN_BUNDLES = ["brain_mri_recon_varnet", "brain_mri_recon_rvn", "brain_mri_recon_unet", "brain_mri_recon_reconresnet"]
RADIAL_BUNDLES = ["brain_mri_recon_reconresnet"]
DATA = {
    "simulated": {
        "about": "validation patient pyradiomics brain2 (23 slices, never trained on), k-space SIMULATED from real images",
        "cartesian": REPO / "data/generated/recon_brain/val/pyradiomics_brain2.h5",
        "radial": REPO / "data/generated/recon_brain_radial/val/pyradiomics_brain2.h5",
    },
    "phantom": {
        "about": "pulseq 32-coil GRE phantom (one 64x64 slice), REAL raw k-space, retrospectively undersampled",
        "cartesian": mribundles.sample_data.path("pulseq_phantom_gre_32ch_ksp.npy"),
        "radial": None,  # no raw radial k-space exists here
    },
}
# (label, mask kind, acceleration); the fully sampled centre is evaluate_recon's 0.32/R
CARTESIAN_SETTINGS = [("1D random 4x", "random1d", 4), ("1D random 8x", "random1d", 8), ("2D Poisson 8x", "poisson2d", 8)]
RADIAL_SPOKES = [64, 32]
NAIVE = ("zero-filled", "gridding")
CS = "l1-wavelet"
MIN_RADIAL_GAIN_DB = 4.0


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
        simulated = name == "simulated"
        for label, kind, acceleration in CARTESIAN_SETTINGS if cartesian else []:
            runs.append({"data": name, "sampling": label, "file": files["cartesian"], "bundles": cartesian,
                         "kwargs": {"mask": kind, "acceleration": acceleration},
                         "targets": {"min_gain_db": 0.0, "beats_cs": simulated}})
        for spokes in RADIAL_SPOKES if radial and files["radial"] is not None else []:
            runs.append({"data": name, "sampling": f"radial {spokes} spokes", "file": files["radial"], "bundles": radial,
                         "kwargs": {"spokes": spokes},
                         "targets": {"min_gain_db": MIN_RADIAL_GAIN_DB if simulated and spokes == 64 else 0.0,
                                     "beats_cs": False}})
    return runs


def run_setting(setting: dict, args: argparse.Namespace) -> tuple[dict, dict]:
    """One setting, every bundle -> ({method: metrics}, {panel title: middle-slice image}).

    The baselines run with the first bundle only: every bundle sees the same samples."""
    cs_iters = args.radial_cs_iters if "spokes" in setting["kwargs"] else args.cs_iters
    methods, volumes = {}, {}
    for index, bundle in enumerate(setting["bundles"]):
        result = evaluate_recon(REPO / "bundles" / bundle, setting["file"], seed=args.seed, cs_iters=cs_iters,
                                baselines=index == 0, keep_images=True, **setting["kwargs"])
        methods.update(result["methods"])
        volumes.update(result["images"])
    # Table and figure order: the naive baseline, the bundles, CS.
    order = [m for m in methods if m in NAIVE] + [m for m in methods if m not in NAIVE and m != CS] + [CS]
    middle = volumes["reference"].shape[0] // 2
    panels = {"fully sampled": volumes["reference"][middle], **{m: volumes[m][middle] for m in order}}
    return {m: methods[m] for m in order}, panels


def table_row(row: dict) -> str:
    return (f"| {row['data']} | {row['sampling']} | {row['method']} | {row['nmse']:.4f} | {row['psnr']:.2f} | "
            f"{row['ssim']:.4f} | {row['seconds_per_slice']:.3f} |")


def target_checks(results: list[tuple[dict, dict]]) -> list[str]:
    """The collection's targets, each as one line saying met or NOT met, with its numbers.

    `results` pairs each setting (with its `targets`, see `settings`) with its {method: metrics}."""
    lines = []
    for run, methods in results:
        naive_name = next(m for m in NAIVE if m in methods)
        naive, cs = methods[naive_name], methods[CS]
        needed = run["targets"]["min_gain_db"]
        for name, row in methods.items():
            if name in NAIVE or name == CS:
                continue
            where = f"{name}, {run['data']}, {run['sampling']}"
            gain = row["psnr"] - naive["psnr"]
            by = f" by at least {needed:g} dB" if needed else ""
            lines.append(f"{'met' if gain > needed else 'NOT met'}: beats {naive_name} in PSNR{by} ({where}: {gain:+.2f} dB)")
            if run["targets"]["beats_cs"]:
                lines.append(f"{'met' if row['psnr'] > cs['psnr'] else 'NOT met'}: beats {CS} in PSNR "
                             f"({where}: {row['psnr'] - cs['psnr']:+.2f} dB)")
            faster = row["seconds_per_slice"] < cs["seconds_per_slice"]
            lines.append(f"{'met' if faster else 'NOT met'}: faster than {CS} "
                         f"({where}: {row['seconds_per_slice']:.3f} s against {cs['seconds_per_slice']:.3f} s per slice)")
    return lines


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
        f"(radial {args.radial_cs_iters}), tuned λ; NMSE/PSNR/SSIM as fastMRI's evaluate.py (whole volume)",
        f"- seconds per slice on this machine: {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
        f"{'CUDA' if torch.cuda.is_available() else 'no GPU'}; all methods of a setting in the same run",
        "",
        "| data | sampling | method | NMSE | PSNR (dB) | SSIM | s/slice |",
        "|---|---|---|---|---|---|---|",
    ]
    print("\n".join(header), flush=True)
    rows, figures, results = [], [], []
    for run in runs:
        methods, panels = run_setting(run, args)
        results.append((run, methods))
        slug = f"{run['data']}_{run['sampling'].lower().replace(' ', '_')}"
        figures.append(args.out / f"{slug}.png")
        save_comparison_png(str(figures[-1]), panels, error_maps=True)
        for method, m in methods.items():
            # per-slice scores stay out of the table and the JSON: the volume figures are the metric
            rows.append({"data": run["data"], "sampling": run["sampling"], "method": method,
                         **{k: v for k, v in m.items() if k != "per_slice"}})
            print(table_row(rows[-1]), flush=True)
    checks = target_checks(results)
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


# ---------------------------------------------------------------------------------------------
# speed

CONFIG = REPO / "bundles/brain_mri_recon_varnet/configs/inference.json"
SIZE = 320
SIZE_OPTIONS = {"cascades": "num_cascades", "chans": "chans", "pools": "pools", "sens_chans": "sens_chans", "sens_pools": "sens_pools"}


def speed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=CONFIG, help="bundle config holding network_def")
    for option in SIZE_OPTIONS:
        parser.add_argument(f"--{option.replace('_', '-')}", type=int, default=None, help="override the bundle's value")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per model (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per model first (default 1)")
    parser.add_argument("--coils", type=int, default=8)
    parser.add_argument("--acceleration", type=float, default=4.0)
    parser.add_argument("--center-fraction", type=float, default=0.08)
    parser.add_argument("--seed", type=int, default=0)


def bundle_network(config: Path, overrides: dict[str, int]) -> tuple[torch.nn.Module, dict[str, int]]:
    """The bundle's `network_def`, with sizes overridden, and the sizes it was built with."""
    parser = ConfigParser()
    parser.read_config(str(config))
    for key, value in overrides.items():
        parser[f"network_def#{key}"] = value
    sizes = {key: int(parser[f"network_def#{key}"]) for key in SIZE_OPTIONS.values()}
    return parser.get_parsed_content("network_def", instantiate=True), sizes


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


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def timed(model: torch.nn.Module, args: tuple) -> tuple[float, torch.Tensor]:
    with torch.inference_mode():
        start = time.perf_counter()
        out = model(*args)
        return time.perf_counter() - start, out


def speed(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    try:
        from fastmri.models import VarNet as FastMRIVarNet
    except ImportError:
        print("fastmri is not installed: pip install fastmri", file=sys.stderr)
        return 2

    overrides = {SIZE_OPTIONS[o]: getattr(args, o) for o in SIZE_OPTIONS if getattr(args, o) is not None}
    ours, sizes = bundle_network(args.config, overrides)
    theirs = FastMRIVarNet(
        num_cascades=sizes["num_cascades"],
        chans=sizes["chans"],
        pools=sizes["pools"],
        sens_chans=sizes["sens_chans"],
        sens_pools=sizes["sens_pools"],
    )
    ours.eval(), theirs.eval()
    our_args, their_args = benchmark_slice(args.coils, args.acceleration, args.center_fraction, args.seed)
    models = {"mribundles VarNet (bundle)": (ours, our_args), "fastmri.models.VarNet": (theirs, their_args)}

    print(f"config: {args.config.relative_to(REPO) if args.config.is_relative_to(REPO) else args.config}")
    print("sizes: " + ", ".join(f"{k}={v}" for k, v in sizes.items()) + (f" (overridden: {', '.join(overrides)})" if overrides else " (the bundle's)"))
    print(f"input: {args.coils} coils x {SIZE}x{SIZE}, random1d R={args.acceleration:g}, "
          f"{their_args[2]} central columns; threads={torch.get_num_threads()}, "
          f"warm-up {args.warmup}, repeats {args.repeats}")

    outputs = {}
    for _ in range(args.warmup):
        for name, (model, inputs) in models.items():
            outputs[name] = timed(model, inputs)[1]
    times: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    for r in range(args.repeats):
        for name in names if r % 2 == 0 else names[::-1]:  # ABBA order cancels linear drift
            seconds, outputs[name] = timed(*models[name])
            times[name].append(seconds)

    shapes = {name: tuple(out.shape) for name, out in outputs.items()}
    ours_name, ref_name = names
    # Ours returns (B, 1, ky, kx), fastMRI (B, ky, kx): the same image once the channel is dropped.
    same_shape = shapes[ours_name][:1] + shapes[ours_name][2:] == shapes[ref_name] and shapes[ours_name][1] == 1
    medians = {name: statistics.median(t) for name, t in times.items()}
    ratio = medians[ours_name] / medians[ref_name]

    print()
    print(f"{'model':<28} {'params':>10} {'median s':>9} {'runs s':<30} output")
    for name, (model, _) in models.items():
        runs = " ".join(f"{t:.2f}" for t in times[name])
        print(f"{name:<28} {count_params(model):>10,} {medians[name]:>9.3f} {runs:<30} {shapes[name]}")
    print(f"ratio ours/fastMRI: {ratio:.3f}")
    print(f"output shapes agree (ours (B,1,ky,kx) vs fastMRI (B,ky,kx)): {'yes' if same_shape else 'NO'}")
    print(f"verdict: {'PASS' if ratio <= 1.0 else 'FAIL'} (target ratio <= 1.0)")
    return 0 if same_shape else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parts = parser.add_subparsers(dest="part", metavar="{quality,speed}", help="default: quality, then speed")
    for name, add_arguments, help_text in (("quality", quality_arguments, "every bundle against the baselines"),
                                          ("speed", speed_arguments, "the VarNet bundle against fastMRI's VarNet")):
        add_arguments(parts.add_parser(name, help=help_text))
    args = parser.parse_args(argv)
    if args.part is not None:
        return {"quality": quality, "speed": speed}[args.part](args)
    status = quality(parser.parse_args(["quality"]))
    print()
    return status or speed(parser.parse_args(["speed"]))


if __name__ == "__main__":
    sys.exit(main())
