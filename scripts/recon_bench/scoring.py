"""One ``quality`` setting, every method: the bundles and baselines through `evaluate_recon`, and
on real data the adapted bundles and the scores inside the head."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from mribundles.evaluation import evaluate_recon
from mribundles.physics import make_mask

from . import REPO
from .settings import ADAPTED, CS, NAIVE, scored_file


def adapted_rows(setting: dict, file: Path, reference: torch.Tensor, seed: int) -> tuple[dict, dict, list[str]]:
    """Every adaptable bundle of a setting after zero-shot SSDU on the setting's own samples
    (the mask evaluate_recon draws: same kind, R, centre 0.32/R and seed) -> ({method: metrics},
    {method: (1, H, W) image}, [one line per bundle whose adaptation refused the mask]). Metrics
    as evaluate_recon's, plus the adaptation's seconds. A refused adaptation has no row: a site
    would get the same refusal and run the bundle as it is."""
    from mribundles.adaptation import UnsplittableMaskError, adapt_and_reconstruct
    from mribundles.io.kspace import load_kspace
    from mribundles.metrics import nmse, psnr, ssim

    kspace = load_kspace(file)
    kind, acceleration = setting["kwargs"]["mask"], setting["kwargs"]["acceleration"]
    mask = make_mask(kind, kspace.shape[-2:], acceleration, 0.32 / acceleration, seed)
    methods, images, refused = {}, {}, []
    for bundle in setting["bundles"]:
        bundle_dir = REPO / "bundles" / bundle
        if not (bundle_dir / "configs" / "adapt.json").is_file():
            continue
        start = time.perf_counter()
        try:
            result = adapt_and_reconstruct(bundle_dir, kspace, mask)
        except UnsplittableMaskError as error:  # a site gets the same refusal and runs the bundle as it is
            refused.append(f"adaptation refused ({bundle}, {setting['data']}, {setting['sampling']}): {error}")
            print(f"  {refused[-1]}", flush=True)
            continue
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
    return methods, images, refused


def head_metrics(reference: torch.Tensor, image: torch.Tensor, head: torch.Tensor) -> dict:
    """PSNR (the volume's maximum as peak, as fastMRI's) and NMSE over the pixels inside ``head``:
    fastMRI's metrics on the selected pixels as one slice, as `metrics.masked_psnr` does."""
    from mribundles.metrics import masked_psnr, nmse

    return {"psnr_head": masked_psnr(reference, image, head, reference.max()),
            "nmse_head": nmse(reference[head].reshape(1, 1, -1), image[head].reshape(1, 1, -1))}


def run_setting(setting: dict, args: argparse.Namespace) -> tuple[dict, dict, list[str]]:
    """One setting, every bundle -> ({method: metrics}, {panel title: middle-slice image},
    [adaptations refused, one line each]).

    The baselines run with the first bundle only: every bundle sees the same samples. On real
    data the first call also runs the oracle CS, the adaptable bundles are adapted, and every
    method is scored inside the head too."""
    cs_iters = args.radial_cs_iters if "spokes" in setting["kwargs"] else args.cs_iters
    real = setting.get("real", False)
    file = scored_file(setting, args.out)
    methods, volumes, refused = {}, {}, []
    for index, bundle in enumerate(setting["bundles"]):
        result = evaluate_recon(REPO / "bundles" / bundle, file, seed=args.seed, cs_iters=cs_iters,
                                baselines=index == 0, keep_images=True, cs_oracle=real and index == 0, **setting["kwargs"])
        methods.update(result["methods"])
        volumes.update(result["images"])
    if real:
        adapted, images, refused = adapted_rows(setting, file, volumes["reference"], args.seed)
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
    return {m: methods[m] for m in order}, panels, refused
