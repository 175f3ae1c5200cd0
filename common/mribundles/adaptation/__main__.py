"""Measure zero-shot adaptation of a bundle on one fully sampled slice, undersampled retrospectively.

    python -m mribundles.adaptation --bundle bundles/brain_mri_recon_rvn \\
        --kspace /work/shared/data/kspace/pulseq_invivo_brain_16ch_ksp.npy --mask random1d --acceleration 4

prints one JSON line: PSNR of zero-filling, of the bundle before and after adaptation against the
fully sampled RSS, over the image and inside its head mask (`adapt_and_reconstruct`), with the
adaptation's history and seconds. The reference scores the results only; it never enters the
adaptation.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from mribundles.adaptation.bundle import adapt_and_reconstruct
from mribundles.evaluation import require_fully_sampled
from mribundles.io.kspace import load_kspace
from mribundles.physics.coils import rss
from mribundles.physics.fft import ifft2c
from mribundles.physics.masks import MASK_KINDS, make_mask


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m mribundles.adaptation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, help="a reconstruction bundle with configs/adapt.json (RVN, VarNet)")
    parser.add_argument("--kspace", required=True, help="fully sampled (coil, ky, kx) k-space file")
    parser.add_argument("--mask", default="random1d", choices=MASK_KINDS)
    parser.add_argument("--acceleration", type=float, default=4)
    parser.add_argument("--center_fraction", type=float, default=None, help="default 0.32 / acceleration")
    parser.add_argument("--seed", type=int, default=0, help="mask seed")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--override", default="{}", help="JSON of config ids, e.g. '{\"adapt_steps\": 100}'")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    kspace = load_kspace(args.kspace)
    if kspace.ndim != 3:
        parser.error(f"{args.kspace}: expected one slice (coil, ky, kx), got {tuple(kspace.shape)}")
    require_fully_sampled(kspace, args.kspace)
    center_fraction = 0.32 / args.acceleration if args.center_fraction is None else args.center_fraction
    mask = make_mask(args.mask, kspace.shape[-2:], args.acceleration, center_fraction, args.seed)
    wall, cpu = time.perf_counter(), time.process_time()
    out = adapt_and_reconstruct(args.bundle, kspace, mask, reference=rss(ifft2c(kspace)), overrides=json.loads(args.override))
    report = {"bundle": out["bundle"], "version": out["version"], "kspace": args.kspace,
              "mask": {"kind": args.mask, "acceleration": args.acceleration, "center_fraction": center_fraction,
                       "seed": args.seed, "sampled_fraction": float(mask.float().mean())},
              "threads": args.threads, "seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu,
              "head_fraction": out["head_fraction"], "metrics": out["metrics"], "settings": out["settings"],
              "adaptation": out["adaptation"]}
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    from mribundles.errors import install_excepthook

    install_excepthook()  # a refusal (a bundle with no adapt.json, a corrupt file) ends in one line
    main()
