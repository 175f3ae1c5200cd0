"""Evaluate a reconstruction bundle against zero-filling and L1-wavelet CS on fully sampled data.

Any reconstruction bundle works: it is opened (`bundles.open_recon_bundle`) with the sampling
settings as overrides and run as a chain's stage runs it (`bundles.Bundle.infer`). Per slice of
the file:

  the bundle's loader -> fully sampled k-space (coil, ky, kx) -> target = RSS
  the bundle's preprocessing (without its loader) of the same k-space (undersamples with the
       fixed seed) -> its mask
       -> the bundle's inferer and network, then its postprocessing (a batch of one)
       -> zero-filled RSS of the fully sampled k-space times that mask
       -> L1-wavelet CS of the same masked k-space and mask

so all three methods see exactly the same samples. Slices are stacked into volumes
(slice, H, W) and scored with the library's fastMRI metrics (volume-level, maxval = the target
volume's maximum).

CS runs with the lamda tuned for the sampling setting (`baselines.cs.tuned_lamda`, chosen on
simulated training data). ``cs_oracle=True`` adds an ORACLE CS: lamda picked per file from a
small grid around the tuned one by the PSNR against the fully sampled reference itself, reported
as the method "l1-wavelet (oracle lambda=...)": an upper bound for CS, not a baseline a user
could run.

A radial file (`io.radial`) is evaluated the same way at ``spokes`` golden-angle spokes: the
target is the file's reference image, the bundle runs with ``sampling="radial"``, and its
baselines are density-compensated gridding and radial L1-wavelet CS on the same spokes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from mribundles.baselines.cs import (DEFAULT_RADIAL_LAMDA, ORACLE_FACTORS, l1_wavelet_radial, l1_wavelet_sweep,
                                     tuned_lamda)
from mribundles.bundles import Bundle, open_recon_bundle
from mribundles.data import kspace_slices
from mribundles.errors import InvalidInputError
from mribundles.io.kspace import load_kspace
from mribundles.metrics import nmse, psnr, ssim
from mribundles.physics.coils import rss
from mribundles.physics.fft import ifft2c
from mribundles.physics.masks import MASK_KINDS, mask_from_kspace
from mribundles.report import progress

__all__ = ["DEFAULT_CS_ITERS", "MIN_SAMPLED_FRACTION", "evaluate_recon", "require_fully_sampled"]

DEFAULT_CS_ITERS = 100
MIN_SAMPLED_FRACTION = 0.95  # below this a file counts as prospectively undersampled


def require_fully_sampled(kspace: torch.Tensor, path: str | os.PathLike) -> None:
    fraction = float(mask_from_kspace(kspace).float().mean())
    if fraction < MIN_SAMPLED_FRACTION:
        raise InvalidInputError(
            f"only {100 * fraction:.1f}% of k-space is sampled; this needs fully sampled "
            "k-space (it undersamples retrospectively and compares with the fully sampled RSS)",
            path,
        )


def _run_network(bundle: Bundle, item: dict) -> torch.Tensor:
    """One preprocessed item through the bundle's inferer, network and postprocessing -> its
    magnitude image (H, W) on the CPU, in the k-space file's units."""
    from monai.data import list_data_collate

    (output,) = bundle.infer(list_data_collate([item]))
    image = torch.as_tensor(output["pred"]).detach().to("cpu", torch.float32)
    return image.reshape(image.shape[-2:])


def _is_radial(kspace_file: Path) -> bool:
    from mribundles.io.kspace import H5_SUFFIXES

    if kspace_file.suffix.lower() not in H5_SUFFIXES:
        return False
    from mribundles.io.fastmri_h5 import open_h5
    from mribundles.io.radial import is_radial

    with open_h5(kspace_file) as hf:
        return is_radial(hf)


def _cartesian_slices(items, kspace_file, bundle: Bundle, settings):
    """Per slice: (target, the bundle's preprocessed item, zero-filling, CS), the last two as
    callables (timed by the caller) on the samples of the bundle's own mask; CS takes a list of
    lamdas and returns one image per lamda. The slice is read once, by the bundle's loader."""
    from mribundles.transforms import ReferenceImaged

    reference, load, preprocessing = ReferenceImaged("kspace", "target"), bundle.loaders(), bundle.preprocessing()
    for entry in items:
        full = load(dict(entry))
        require_fully_sampled(full["kspace"], kspace_file)
        item = preprocessing(dict(full))
        sampling = torch.as_tensor(item["mask"]).cpu()
        measured = full["kspace"] * sampling
        yield (reference(full)["target"][0], item, lambda m=measured: rss(ifft2c(m)),
               lambda lams, m=measured, s=sampling: l1_wavelet_sweep(m, s, lams, settings["cs_iters"]))


def _radial_slices(items, kspace_file, bundle: Bundle, settings):
    """Per slice of a radial file: (its reference image, the bundle's preprocessed item, the
    gridding and radial CS of the spokes the bundle kept, as read from the file)."""
    from mribundles.io.radial import read_radial_reference
    from mribundles.physics.radial import grid_rss

    load, preprocessing = bundle.loaders(), bundle.preprocessing()
    for entry in items:
        target = read_radial_reference(kspace_file, int(entry.get("slice") or 0))
        loaded = load(dict(entry))
        item = preprocessing(dict(loaded))
        trajectory = item["trajectory"]  # the first spokes of the file's (a golden-angle prefix)
        measured = loaded["kspace"][..., : trajectory.shape[1], :]
        yield (target, item, lambda m=measured, t=trajectory: grid_rss(m, t),
               lambda lams, m=measured, t=trajectory: [l1_wavelet_radial(m, t, lam, settings["cs_iters"]) for lam in lams])


def evaluate_recon(
    bundle_dir: str | os.PathLike,
    kspace_file: str | os.PathLike,
    mask: str = "random1d",
    acceleration: float = 4,
    center_fraction: float | None = None,
    seed: int = 0,
    device: str = "cpu",
    cs_lamda: float | None = None,
    cs_iters: int = DEFAULT_CS_ITERS,
    baselines: bool = True,
    figure: str | os.PathLike | None = None,
    spokes: int = 64,
    keep_images: bool = False,
    cs_oracle: bool = False,
) -> dict:
    """Reconstruct every slice of a fully sampled k-space file three ways and score them.

    Args:
        bundle_dir: a reconstruction bundle (configs/inference.json, its ckpt_path weights).
        kspace_file: fully sampled k-space, (coil, ky, kx) or (slice, coil, ky, kx), any
            format of ``mribundles.io.load_kspace``.
        mask: one of ``physics.masks.MASK_KINDS`` (not "none": retrospective only).
        acceleration: undersampling factor R.
        center_fraction: fully sampled centre; default 0.32 / R (fastMRI's 0.08 at 4x, 0.04 at 8x).
        seed: mask seed, the same for every slice and method.
        device: torch device of the network.
        cs_lamda: relative L1 weight of the CS baseline (default: ``tuned_lamda`` of the mask
            kind and acceleration, or DEFAULT_RADIAL_LAMDA for a radial file).
        cs_iters: iterations of the CS baseline.
        baselines: also run zero-filling and CS (False when they are already known for the
            same file and mask, e.g. when comparing several bundles).
        figure: if given, a PNG of the middle slice: reference beside every method, and each
            method's error map below it.
        spokes: a radial file's golden-angle spokes to keep (``mask``, ``acceleration`` and
            ``center_fraction`` are then unused).
        keep_images: also return the volumes, under "images": {"reference": (slice, H, W),
            <method>: (slice, H, W)}, on the CPU (for figures that combine several calls).
        cs_oracle: also run the ORACLE CS (needs ``baselines``): every lamda of
            ``cs_lamda * ORACLE_FACTORS``, keeping the one with the best volume PSNR against the
            reference; listed last as "l1-wavelet (oracle lambda=<value>)" (its seconds per slice:
            the whole grid's, sensitivities estimated once, over the grid's size), the grid in
            settings["cs_oracle_grid"].

    Returns:
        {"data_file", "bundle", "num_slices", "settings": {...},
         "methods": {name: {"nmse", "psnr", "ssim", "seconds_per_slice",
                            "per_slice": {"nmse", "psnr", "ssim"}}}} with the methods
        <bundle name>, "zero-filled" (radial: "gridding") and "l1-wavelet", in that order
        (and the oracle CS last, with ``cs_oracle``).
        Per-slice figures use the volume's maximum, like the volume-level ones.
        With ``keep_images``, also "images" (above).

    Raises:
        InvalidInputError: bad file (missing, corrupt, NaN, prospectively undersampled), bad
            mask kind or bad bundle config; FileNotFoundError: missing weights.
    """
    bundle_dir, kspace_file = Path(bundle_dir).resolve(), Path(kspace_file)
    if not bundle_dir.is_dir():
        raise FileNotFoundError(f"{bundle_dir}: no such bundle folder")
    items = kspace_slices(kspace_file)  # reads only the header; raises on a missing/bad file
    torch_device = torch.device(device)
    if _is_radial(kspace_file):
        settings = {"sampling": "radial", "spokes": int(spokes), "device": str(torch_device),
                    "cs_lamda": DEFAULT_RADIAL_LAMDA if cs_lamda is None else cs_lamda, "cs_iters": cs_iters}
        sampling, overrides = "radial", {"spokes": int(spokes), "device": torch_device}
        slices = _radial_slices
    else:
        if mask not in MASK_KINDS:
            raise InvalidInputError(
                f"mask {mask!r} is not a retrospective mask; evaluate-recon needs one of {', '.join(MASK_KINDS)}"
            )
        if not acceleration > 1:
            raise InvalidInputError(f"acceleration must be > 1, got {acceleration}")
        center_fraction = 0.32 / acceleration if center_fraction is None else float(center_fraction)
        if not 0 < center_fraction < 1:
            raise InvalidInputError(f"center fraction must be in (0, 1), got {center_fraction}")
        require_fully_sampled(load_kspace(kspace_file, slice_index=items[0].get("slice")), kspace_file)
        settings = {"mask": mask, "acceleration": acceleration, "center_fraction": center_fraction, "seed": seed,
                    "device": str(torch_device), "cs_lamda": tuned_lamda(mask, acceleration) if cs_lamda is None else cs_lamda,
                    "cs_iters": cs_iters}
        sampling, overrides = "cartesian", {"mask": mask, "acceleration": acceleration, "center_fraction": center_fraction,
                                            "seed": seed, "device": torch_device}
        slices = _cartesian_slices
    if cs_oracle and not baselines:
        raise ValueError("cs_oracle needs baselines=True")
    oracle_grid = [settings["cs_lamda"] * factor for factor in ORACLE_FACTORS] if cs_oracle else []
    if cs_oracle:
        settings["cs_oracle_grid"] = oracle_grid
    bundle = open_recon_bundle(bundle_dir, sampling, overrides)
    bundle.network()  # loaded before the first slice's clock starts
    name = bundle.name

    naive = "gridding" if settings.get("sampling") == "radial" else "zero-filled"
    methods = (name, naive, "l1-wavelet") if baselines else (name,)
    images, seconds = {m: [] for m in methods}, {m: 0.0 for m in methods}
    oracle_images, oracle_seconds = {lam: [] for lam in oracle_grid}, 0.0
    targets = []
    for target, item, naive_image, cs_image in progress(slices(items, kspace_file, bundle, settings), "slice",
                                                        total=len(items), desc=name):
        targets.append(target)
        start = time.perf_counter()
        images[name].append(_run_network(bundle, item))
        seconds[name] += time.perf_counter() - start
        if not baselines:
            continue
        for method, reconstruct in ((naive, naive_image), ("l1-wavelet", lambda: cs_image([settings["cs_lamda"]])[0])):
            start = time.perf_counter()
            images[method].append(reconstruct())
            seconds[method] += time.perf_counter() - start
        if oracle_grid:
            start = time.perf_counter()
            for lam, image in zip(oracle_grid, cs_image(oracle_grid)):
                oracle_images[lam].append(image)
            oracle_seconds += (time.perf_counter() - start) / len(oracle_grid)

    target = torch.stack(targets)
    maxval = target.max()
    if oracle_grid:  # the ORACLE: lamda chosen by the PSNR against the reference itself
        best = max(oracle_grid, key=lambda lam: psnr(target, torch.stack(oracle_images[lam]), maxval))
        oracle = f"l1-wavelet (oracle lambda={best:.3g})"
        images[oracle], seconds[oracle] = oracle_images[best], oracle_seconds
        methods = (*methods, oracle)
    results = {}
    for method in methods:
        volume = torch.stack(images[method])
        results[method] = {
            "nmse": nmse(target, volume),
            "psnr": psnr(target, volume, maxval),
            "ssim": ssim(target, volume, maxval),
            "seconds_per_slice": seconds[method] / len(items),
            "per_slice": {
                "nmse": [nmse(target[i : i + 1], volume[i : i + 1]) for i in range(len(items))],
                "psnr": [psnr(target[i : i + 1], volume[i : i + 1], maxval) for i in range(len(items))],
                "ssim": [ssim(target[i : i + 1], volume[i : i + 1], maxval) for i in range(len(items))],
            },
        }
    if figure is not None:
        from mribundles.handlers import save_comparison_png

        middle = len(items) // 2
        panels = {m: images[m][middle].cpu() for m in methods}
        save_comparison_png(str(figure), {"fully sampled": target[middle].cpu(), **panels}, error_maps=True)
    result = {
        "data_file": str(kspace_file),
        "bundle": name,
        "bundle_dir": str(bundle_dir),
        "num_slices": len(items),
        "settings": settings,
        "methods": results,
    }
    if keep_images:
        result["images"] = {"reference": target.cpu(), **{m: torch.stack(images[m]).cpu() for m in methods}}
    return result
