#!/usr/bin/env python
"""The collection's reconstruction benchmark: quality and seconds per slice of every bundle, and
the VarNet bundle's speed against fastMRI's and the RVN bundle's against DIRECT's.

``quality``: every reconstruction bundle against zero-filling (radial: gridding) and the tuned
L1-wavelet CS baseline, through `mribundles.evaluation.evaluate_recon`, so all methods of a
setting see exactly the same samples:

- data **simulated**: the validation patient of `scripts/make_recon_dataset.py` (pyradiomics
  brain2, 23 slices, never trained on); its k-space is SIMULATED from real images. Cartesian:
  1D random 4x and 8x (centre 0.32/R) and 2D Poisson 8x; radial (bundles with a ``sampling``
  switch): the first 64 and 32 golden-angle spokes.
- data **invivo**: REAL raw k-space, the pulseq 16-coil in-vivo brain shipped in
  `mribundles.sample_data` (one 128x128 slice, whole head, readout 2x oversampled; a TEST scan,
  never trained or tuned on), retrospectively undersampled by the same masks; 1D masks choose
  phase-encode lines (the file's last axis), as a real acquisition does.
- data **phantom**: REAL raw k-space, the pulseq 32-coil GRE phantom shipped in
  `mribundles.sample_data` (one 64x64 slice), retrospectively undersampled by the same masks. Its
  file is (coil, phase-encode, readout): the benchmark scores a transposed copy, so that 1D masks
  choose phase-encode lines here too.

On real data every reconstruction bundle with a ``configs/adapt.json`` also runs after zero-shot
self-supervised adaptation (SSDU, `mribundles.adaptation.adapt_and_reconstruct`) on the same
undersampled samples, and CS runs twice: with its tuned lambda and with an ORACLE lambda picked
on the reference (an upper bound for CS, labelled as such).

NMSE/PSNR/SSIM as fastMRI's `evaluate.py` (whole volume); on real data also PSNR and NMSE inside a
head mask (`metrics.head_mask` of the reference), since the noisy background of a raw scan weighs
on whole-image PSNR. It writes a Markdown table
(``bench_recon.md``) and per setting a PNG of the middle slice (reference, zero-filled or
gridding, each bundle, CS, and their error maps) under ``--out``, prints the table, and checks
the targets of the collection: every bundle beats zero-filling everywhere, beats CS in PSNR at
every Cartesian setting (4x and 8x) on the simulated data and is faster than CS; the radial
bundle beats gridding by 4 dB at 64 spokes; on the real in-vivo brain, inside the head, the best
bundle beats zero-filling by 3 dB at 1D 4x and the oracle CS by 1 dB at 1D 4x and 3 dB at 1D 8x,
and adaptation lifts its bundle by 3 dB at 1D 4x in under 5 minutes and never lowers it. The rows are also written as ``bench_recon.json``.

``speed``: a bundle's network against its peer's, with the same sizes, on the same 320x320 slice:
the shipped real T1 slice (voxelmorph), resized to 320 columns and zero-padded to 320 rows, 8-coil
k-space SIMULATED from it, undersampled by a 4x random column mask. Every model runs in eval mode
under `torch.inference_mode` with the same thread count; after a warm-up the runs are interleaved
(A, B, B, A, ... ; with a third entry A, B, C, C, B, A) so that load drifting on the machine hits
all alike, and the median of ``--repeats`` runs is reported. The target is ratio (ours / peer)
<= 1.0.

- ``--model varnet`` (default): the VarNet bundle's `network_def` against
  `fastmri.models.VarNet` with the same num_cascades, chans, pools, sens_chans and sens_pools.
  Both are timed whole (sensitivity estimation, cascades, RSS). fastMRI gets the slice in its
  own layout (stacked real/imaginary last dimension, a (1, 1, 1, kx, 1) column mask, the number
  of central low frequencies).
- ``--model rvn``: the RVN bundle's `mribundles.networks.RecurrentVarNet` against DIRECT's
  `direct.nn.recurrentvarnet.recurrentvarnet.RecurrentVarNet` (pip package ``direct-recon``)
  with the same num_steps, hidden channels and layers, per-step weights and a learned SENSE
  initialiser with ours' dilations (`direct_rvn_kwargs` says what DIRECT cannot match: its GRU
  gates are 1x1, ours 3x3). DIRECT's model takes precomputed sensitivity maps, ours estimates
  them inside. So ours is timed whole (normalisation, sensitivity estimation, initialiser,
  steps, RSS), and DIRECT's row times the same job: our normalisation and sensitivity
  estimation (the very `sens_net` module of ours, `NormalisedMaps`), DIRECT's initialiser and
  steps on zero-copy real views of the k-space and maps, then the RSS image as DIRECT's engine
  computes it. The estimation is also timed alone in the same interleaved runs; the printed
  second ratio takes its median out of both (a difference of medians, not a timing).

    python scripts/make_recon_dataset.py --data ../shared/data                                      # once
    python scripts/make_recon_dataset.py --sampling radial --out data/generated/recon_brain_radial  # once
    python scripts/bench_recon.py                       # quality, then speed, with their defaults
    python scripts/bench_recon.py quality --data invivo phantom --bundles brain_mri_recon_rvn
    python scripts/bench_recon.py speed --cascades 12 --chans 18 --sens-chans 8   # fastMRI's sizes
    python scripts/bench_recon.py speed --model rvn --threads 1 --repeats 5     # against DIRECT's RVN
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

import mribundles
from mribundles.bundles import open_bundle
from mribundles.errors import InvalidInputError
from mribundles.evaluation import DEFAULT_CS_ITERS, evaluate_recon
from mribundles.physics import calibration_size, ifft2c, make_mask, rss, simulate_multicoil_kspace

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


def adapted_rows(setting: dict, file: Path, reference: torch.Tensor, seed: int) -> tuple[dict, dict]:
    """Every adaptable bundle of a setting after zero-shot SSDU on the setting's own samples
    (the mask evaluate_recon draws: same kind, R, centre 0.32/R and seed) -> ({method: metrics},
    {method: (1, H, W) image}). Metrics as evaluate_recon's, plus the adaptation's seconds."""
    from mribundles.adaptation import adapt_and_reconstruct
    from mribundles.io.kspace import load_kspace
    from mribundles.metrics import nmse, psnr, ssim

    kspace = load_kspace(file)
    kind, acceleration = setting["kwargs"]["mask"], setting["kwargs"]["acceleration"]
    mask = make_mask(kind, kspace.shape[-2:], acceleration, 0.32 / acceleration, seed)
    methods, images = {}, {}
    for bundle in setting["bundles"]:
        bundle_dir = REPO / "bundles" / bundle
        if not (bundle_dir / "configs" / "adapt.json").is_file():
            continue
        start = time.perf_counter()
        result = adapt_and_reconstruct(bundle_dir, kspace, mask)
        seconds = time.perf_counter() - start
        image = result["images"]["after"][None].to(torch.float32)
        name = f"{result['bundle']}{ADAPTED}"
        maxval = reference.max()
        methods[name] = {"nmse": nmse(reference, image), "psnr": psnr(reference, image, maxval),
                         "ssim": ssim(reference, image, maxval), "seconds_per_slice": seconds,
                         "adaptation": {k: result["adaptation"][k] for k in ("start_loss", "best_loss", "best_step", "steps_run")}}
        images[name] = image
        print(f"  adapted {bundle}: {seconds:.0f} s, held-out loss {result['adaptation']['start_loss']:.4f} -> "
              f"{result['adaptation']['best_loss']:.4f} (step {result['adaptation']['best_step']})", flush=True)
    return methods, images


def head_metrics(reference: torch.Tensor, image: torch.Tensor, head: torch.Tensor) -> dict:
    """PSNR (the volume's maximum as peak, as fastMRI's) and NMSE over the pixels inside ``head``:
    fastMRI's metrics on the selected pixels as one slice, as `metrics.masked_psnr` does."""
    from mribundles.metrics import masked_psnr, nmse

    return {"psnr_head": masked_psnr(reference, image, head, reference.max()),
            "nmse_head": nmse(reference[head].reshape(1, 1, -1), image[head].reshape(1, 1, -1))}


def run_setting(setting: dict, args: argparse.Namespace) -> tuple[dict, dict]:
    """One setting, every bundle -> ({method: metrics}, {panel title: middle-slice image}).

    The baselines run with the first bundle only: every bundle sees the same samples. On real
    data the first call also runs the oracle CS, the adaptable bundles are adapted, and every
    method is scored inside the head too."""
    cs_iters = args.radial_cs_iters if "spokes" in setting["kwargs"] else args.cs_iters
    real = setting.get("real", False)
    file = scored_file(setting, args.out)
    methods, volumes = {}, {}
    for index, bundle in enumerate(setting["bundles"]):
        result = evaluate_recon(REPO / "bundles" / bundle, file, seed=args.seed, cs_iters=cs_iters,
                                baselines=index == 0, keep_images=True, cs_oracle=real and index == 0, **setting["kwargs"])
        methods.update(result["methods"])
        volumes.update(result["images"])
    if real:
        adapted, images = adapted_rows(setting, file, volumes["reference"], args.seed)
        methods.update(adapted)
        volumes.update(images)
        from mribundles.metrics import head_mask

        head = head_mask(volumes["reference"])
        for name in methods:
            methods[name].update(head_metrics(volumes["reference"], volumes[name], head))
    # Table and figure order: the naive baseline, the bundles (each adapted one after its own), CS.
    baselines = [m for m in methods if m in NAIVE or m.startswith(CS)]
    bundles = sorted((m for m in methods if m not in baselines), key=lambda m: (m.replace(ADAPTED, ""), m.endswith(ADAPTED)))
    order = [m for m in baselines if m in NAIVE] + bundles + [m for m in baselines if m.startswith(CS)]
    middle = volumes["reference"].shape[0] // 2
    panels = {"fully sampled": volumes["reference"][middle], **{m: volumes[m][middle] for m in order}}
    return {m: methods[m] for m in order}, panels


def table_row(row: dict) -> str:
    head = f" {row['psnr_head']:.2f} | {row['nmse_head']:.4f} |" if "psnr_head" in row else " | |"
    return (f"| {row['data']} | {row['sampling']} | {row['method']} | {row['nmse']:.4f} | {row['psnr']:.2f} | "
            f"{row['ssim']:.4f} |{head} {row['seconds_per_slice']:.3f} |")


def target_checks(results: list[tuple[dict, dict]]) -> list[str]:
    """The collection's targets, each as one line saying met or NOT met, with its numbers.

    `results` pairs each setting (with its `targets`, see `settings`) with its {method: metrics}."""
    lines = []
    for run, methods in results:
        naive_name = next(m for m in NAIVE if m in methods)
        naive, cs = methods[naive_name], methods[CS]
        needed = run["targets"]["min_gain_db"]
        for name, row in methods.items():
            if name in NAIVE or name.startswith(CS):
                continue
            where = f"{name}, {run['data']}, {run['sampling']}"
            gain = row["psnr"] - naive["psnr"]
            by = f" by at least {needed:g} dB" if needed else ""
            lines.append(f"{'met' if gain > needed else 'NOT met'}: beats {naive_name} in PSNR{by} ({where}: {gain:+.2f} dB)")
            if "psnr_head" in row:
                head_gain = row["psnr_head"] - naive["psnr_head"]
                lines.append(f"{'met' if head_gain > 0 else 'NOT met'}: beats {naive_name} in PSNR inside the head "
                             f"({where}: {head_gain:+.2f} dB)")
            if run["targets"]["beats_cs"]:
                lines.append(f"{'met' if row['psnr'] > cs['psnr'] else 'NOT met'}: beats {CS} in PSNR "
                             f"({where}: {row['psnr'] - cs['psnr']:+.2f} dB)")
            if name.endswith(ADAPTED):
                continue  # its seconds are the adaptation's: speed is the bundle's own row
            faster = row["seconds_per_slice"] < cs["seconds_per_slice"]
            lines.append(f"{'met' if faster else 'NOT met'}: faster than {CS} "
                         f"({where}: {row['seconds_per_slice']:.3f} s against {cs['seconds_per_slice']:.3f} s per slice)")
    return lines + real_data_checks(results)


def real_data_checks(results: list[tuple[dict, dict]]) -> list[str]:
    """The targets on the real in-vivo brain (inside the head) and of zero-shot adaptation."""
    lines = []
    for run, methods in results:
        if not run.get("real"):
            continue
        where = f"{run['data']}, {run['sampling']}"
        for name, row in methods.items():
            if not name.endswith(ADAPTED):
                continue
            before = methods[name.replace(ADAPTED, "")]
            gain = row["psnr_head"] - before["psnr_head"]
            lines.append(f"{'met' if gain >= 0 else 'NOT met'}: adaptation does not lower its bundle inside the head "
                         f"({name}, {where}: {gain:+.2f} dB)")
            if run["data"] == "invivo" and run["sampling"] == "1D random 4x":
                lines.append(f"{'met' if gain >= MIN_ADAPTATION_GAIN_DB else 'NOT met'}: adaptation lifts its bundle by at "
                             f"least {MIN_ADAPTATION_GAIN_DB:g} dB inside the head ({name}, {where}: {gain:+.2f} dB)")
                fast = row["seconds_per_slice"] < MAX_ADAPTATION_SECONDS
                lines.append(f"{'met' if fast else 'NOT met'}: adaptation takes less than {MAX_ADAPTATION_SECONDS:g} s "
                             f"({name}, {where}: {row['seconds_per_slice']:.0f} s)")
        if run["data"] != "invivo" or run["sampling"] not in INVIVO_TARGETS:
            continue
        bundles = {m: r for m, r in methods.items() if m not in NAIVE and not m.startswith(CS)}
        best = max(bundles, key=lambda m: bundles[m]["psnr_head"])
        oracle = next(r for m, r in methods.items() if m.startswith(ORACLE_CS))
        over_naive, over_oracle = INVIVO_TARGETS[run["sampling"]]
        for needed, baseline, label in ((over_naive, methods["zero-filled"], "zero-filled"), (over_oracle, oracle, "oracle CS")):
            if needed is None:
                continue
            gain = bundles[best]["psnr_head"] - baseline["psnr_head"]
            lines.append(f"{'met' if gain >= needed else 'NOT met'}: the best bundle beats {label} by at least {needed:g} dB "
                         f"inside the head ({best}, {where}: {gain:+.2f} dB)")
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
                         **{k: v for k, v in m.items() if k not in ("per_slice", "oracle_psnr")}})
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


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def timed(model: torch.nn.Module, args: tuple) -> tuple[float, torch.Tensor]:
    with torch.inference_mode():
        start = time.perf_counter()
        out = model(*args)
        return time.perf_counter() - start, out


def interleaved_times(entries: dict, repeats: int, warmup: int) -> tuple[dict[str, list[float]], dict]:
    """Seconds of `repeats` runs of every entry {name: (module, inputs, ...)}, after `warmup`
    untimed ones, in ABC CBA order so that load drifting on the machine hits all alike;
    and each entry's last output."""
    outputs = {}
    for _ in range(warmup):
        for name, (model, inputs, *_) in entries.items():
            outputs[name] = timed(model, inputs)[1]
    times: dict[str, list[float]] = {name: [] for name in entries}
    names = list(entries)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            seconds, outputs[name] = timed(*entries[name][:2])
            times[name].append(seconds)
    return times, outputs


def speed(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    spec = SPEED_MODELS[args.model]
    config = args.config or spec["config"]
    try:
        overrides = size_overrides(args.model, {o: getattr(args, o) for o in SIZE_OPTIONS}, config)
    except InvalidInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    ours, sizes = bundle_network(config, overrides, list(spec["sizes"].values()))
    slice_args = benchmark_slice(args.coils, args.acceleration, args.center_fraction, args.seed)
    entries = peer_entries(args.model, ours, sizes, slice_args)
    if entries is None:
        return 2
    for model, *_ in entries.values():
        model.eval()

    peer = spec["peer"]
    print(f"config: {config.relative_to(REPO) if config.is_relative_to(REPO) else config}")
    print("sizes: " + ", ".join(f"{k}={v}" for k, v in sizes.items()) + (f" (overridden: {', '.join(overrides)})" if overrides else " (the bundle's)"))
    print(f"input: {args.coils} coils x {SIZE}x{SIZE}, random1d R={args.acceleration:g}, "
          f"{slice_args[1][2]} central columns; threads={torch.get_num_threads()}, "
          f"warm-up {args.warmup}, repeats {args.repeats}")
    print("timed, each in eval mode under torch.inference_mode:")
    for name, (_, _, includes) in entries.items():
        print(f"  {name}: {includes}")

    times, outputs = interleaved_times(entries, args.repeats, args.warmup)
    names = list(entries)
    ours_name, ref_name = names[:2]
    shapes = {name: tuple(outputs[name].shape) for name in names[:2]}
    # Ours returns (B, 1, ky, kx), the peers (B, ky, kx): the same image once the channel is dropped.
    same_shape = shapes[ours_name][:1] + shapes[ours_name][2:] == shapes[ref_name] and shapes[ours_name][1] == 1
    medians = {name: statistics.median(t) for name, t in times.items()}
    ratio = medians[ours_name] / medians[ref_name]

    print()
    print(f"{'model':<36} {'params':>10} {'median s':>9} {'runs s':<30} output")
    for name, (model, *_) in entries.items():
        runs = " ".join(f"{t:.2f}" for t in times[name])
        print(f"{name:<36} {count_params(model):>10,} {medians[name]:>9.3f} {runs:<30} {shapes.get(name, '')}")
    print(f"ratio ours/{peer}: {ratio:.3f}")
    if len(names) > 2:  # the shared part, taken out of both medians (a difference of medians, not a timing)
        shared = medians[names[2]]
        print(f"ratio ours/{peer} without the shared part (both medians minus the {shared:.3f} s of {names[2]!r}): "
              f"{(medians[ours_name] - shared) / (medians[ref_name] - shared):.3f}")
    print(f"output shapes agree (ours (B,1,ky,kx) vs {peer} (B,ky,kx)): {'yes' if same_shape else 'NO'}")
    print(f"verdict: {'PASS' if ratio <= 1.0 else 'FAIL'} (target ratio ours/{peer} <= 1.0)")
    return 0 if same_shape else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parts = parser.add_subparsers(dest="part", metavar="{quality,speed}", help="default: quality, then speed")
    for name, add_arguments, help_text in (("quality", quality_arguments, "every bundle against the baselines"),
                                          ("speed", speed_arguments, "a bundle's network against its peer's (--model)")):
        add_arguments(parts.add_parser(name, help=help_text))
    args = parser.parse_args(argv)
    if args.part is not None:
        return {"quality": quality, "speed": speed}[args.part](args)
    status = quality(parser.parse_args(["quality"]))
    print()
    return status or speed(parser.parse_args(["speed"]))


if __name__ == "__main__":
    sys.exit(main())
