#!/usr/bin/env python
"""Choose the registration bundle's instance refinement (step size, smoothness, window) on pairs
SYNTHESISED from the real label maps, never on the real evaluation pair.

The evaluation pair of `scripts/bench_downstream.py` (the voxelmorph subject and the MNI152
template) is the only real inter-subject pair there is, so the refinement's settings are chosen
elsewhere: on whole-brain pairs of two different heads of the 20 label maps in
``../shared/data/labels/synthseg`` (`mribundles.synth.SyntheticPairDataset`, validation draws:
the same pairs on every run), both sides T1-like, skull-stripped, at 1 mm, as the real pair is.
Each pair goes through what the bundle does at inference (intensities scaled to [0, 1] by the
0-99.5 percentiles, `AffineAlignd`, the bundle's network) once per setting of the grid, and is
scored by the Dice of its tissue labels (CSF, grey and white matter; MONAI's `DiceMetric`), the
share of folding voxels and the seconds of the network call. The number of steps is not tuned
here: it is what the time budget allows (the bundle must stay 20x faster than ANTs SyN).

    python scripts/tune_registration.py [--pairs 6] [--steps 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("CSF", "grey matter", "white matter")


def synthetic_pairs(label_maps: Path, count: int, shape: tuple[int, int, int]) -> list[dict]:
    """``count`` T1-like whole-brain pairs of two different heads, prepared as at inference."""
    from monai.transforms import ScaleIntensityRangePercentilesd

    from mribundles.synth import SyntheticPairDataset

    scale = ScaleIntensityRangePercentilesd(["moving_image", "fixed_image"], lower=0, upper=99.5, b_min=0.0, b_max=1.0, clip=True)
    pairs = SyntheticPairDataset(label_maps, length=count, patch_size=shape, seed=2026, fresh=False, same_subject_prob=0.0,
                                 skull_strip_prob=1.0, thick_slice_prob=0.0, max_noise=0.02, contrasts=["t1"], transform=scale)
    return [pairs[i] for i in range(count)]


def score(network: torch.nn.Module, pair: dict) -> dict:
    """Dice per class, folding share (%) and seconds of one registration by ``network``."""
    from monai.metrics import DiceMetric
    from monai.networks.blocks import Warp
    from monai.networks.utils import one_hot

    from mribundles.metrics.registration import folding_fraction
    from mribundles.transforms import AffineAlignd

    aligned = AffineAlignd(["moving_image", "moving_label"], fixed_key="fixed_image", mode=["bilinear", "nearest"])(
        {**pair, "moving_label": pair["moving_label"].float()})
    moving, fixed = aligned["moving_image"][None], aligned["fixed_image"][None]
    start = time.perf_counter()
    with torch.no_grad():
        ddf = network(moving, fixed)
    seconds = time.perf_counter() - start
    warped = Warp("nearest", "zeros")(aligned["moving_label"][None], ddf)
    dice = DiceMetric(include_background=False)(one_hot(warped, 4), one_hot(pair["fixed_label"][None].float(), 4))[0]
    brain = pair["fixed_label"] > 0
    return {**{name: float(d) for name, d in zip(CLASSES, dice)}, "folding_percent": 100 * folding_fraction(ddf, brain[None]),
            "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "bundles/brain_mri_reg_voxelmorph")
    parser.add_argument("--label-maps", type=Path, default=REPO.parent / "shared/data/labels/synthseg")
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--shape", type=int, nargs=3, default=[160, 192, 160], help="voxels at 1 mm, divisible by 16")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--factor", type=int, default=2, help="refinement grid: the network's pooled by this")
    parser.add_argument("--integration-steps", type=int, default=5)
    parser.add_argument("--lr", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    parser.add_argument("--smoothness", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--kernel", type=int, nargs="+", default=[3, 5, 7])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from mribundles.bundles import open_bundle
    from mribundles.registration import Refinement

    network = open_bundle(args.bundle, overrides={"device": "$torch.device('cpu')"}).network().eval()
    print(f"synthesising {args.pairs} pairs from {args.label_maps}", flush=True)
    pairs = synthetic_pairs(args.label_maps, args.pairs, tuple(args.shape))
    settings = [(0, 0.0, 0.0, 0)] + [(args.steps, *s) for s in itertools.product(args.lr, args.smoothness, args.kernel)]
    rows = []
    print("| steps | lr | smoothness | window | Dice CSF | Dice GM | Dice WM | det J <= 0 (%) | seconds |\n|---|---|---|---|---|---|---|---|---|")
    for steps, lr, smoothness, kernel in settings:
        network.refine = Refinement(steps, lr, smoothness, kernel, args.factor, args.integration_steps)
        scores = [score(network, pair) for pair in pairs]
        mean = {key: sum(s[key] for s in scores) / len(scores) for key in scores[0]}
        rows.append({"steps": steps, "lr": lr, "smoothness": smoothness, "kernel": kernel, **mean})
        print(f"| {steps} | {lr} | {smoothness} | {kernel} | {mean['CSF']:.3f} | {mean['grey matter']:.3f} | "
              f"{mean['white matter']:.3f} | {mean['folding_percent']:.3f} | {mean['seconds']:.2f} |", flush=True)
    best = max((r for r in rows if r["steps"] and r["folding_percent"] < 0.1), key=lambda r: r["grey matter"] + r["white matter"])
    print(f"best (mean of GM and WM Dice, folding < 0.1 %): lr {best['lr']}, smoothness {best['smoothness']}, window {best['kernel']}")


if __name__ == "__main__":
    main()
