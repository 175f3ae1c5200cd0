#!/usr/bin/env python
"""Time the VarNet bundle's network against fastMRI's reference `VarNet` on one 8-coil slice.

The network under test is built from `bundles/brain_mri_recon_varnet/configs/inference.json`'s
`network_def` with `monai.bundle.ConfigParser`, so the benchmark follows the bundle; the
reference is `fastmri.models.VarNet` with the same num_cascades, chans, pools, sens_chans and
sens_pools. Both get the same 320x320 slice: the shipped real T1 slice (voxelmorph), resized
to 320 columns and zero-padded to 320 rows, 8-coil k-space SIMULATED from it
(`mribundles.physics.simulate`), undersampled by a 4x random column mask. fastMRI gets it in its
own layout: stacked real/imaginary last dimension, a (1, 1, 1, kx, 1) column mask and the
number of central low frequencies.

Both models run in eval mode under `torch.inference_mode` with the same thread count; after a
warm-up the runs are interleaved (ours, fastMRI, fastMRI, ours, ...) so that load drifting on
the machine hits both alike, and the median of `--repeats` runs is reported. The target is
ratio (ours / fastMRI) <= 1.0.

    python scripts/bench_recon.py                       # the bundle's sizes
    python scripts/bench_recon.py --cascades 12 --chans 18 --sens-chans 8   # fastMRI's defaults
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser
from torch.nn import functional as F

import mribundles
from mribundles.physics import calibration_size, make_mask, simulate_multicoil_kspace

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "bundles/brain_mri_recon_varnet/configs/inference.json"
SIZE = 320
SIZE_OPTIONS = {"cascades": "num_cascades", "chans": "chans", "pools": "pools", "sens_chans": "sens_chans", "sens_pools": "sens_pools"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
    return parser.parse_args(argv)


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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
