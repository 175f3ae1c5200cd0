"""Adapting a Cartesian reconstruction bundle to a site's own undersampled scans.

`BundleAdaptation` is what a bundle's ``configs/adapt.json`` (an overlay on its
``inference.json``) runs: it reads the scans through the bundle's own preprocessing (so the
network sees what inference gives it), refuses what cannot be adapted on, runs zero-shot SSDU
(`ssdu.adapt`) from the bundle's weights, and writes the adapted weights and a model-card
addendum to ``<output_dir>/adapted/``. `adapt_and_reconstruct` is the same adaptation on one
slice in memory, with the reconstructions before and after, for benchmarks.

Only the unrolled bundles (RVN, VarNet) ship an adapt.json: a network that returns only a
magnitude image (U-Net, ReconResNet) is refused (`models.kspace_model` says why).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from mribundles.adaptation.models import kspace_model
from mribundles.adaptation.ssdu import AdaptationResult, UnsplittableMaskError, adapt, ssdu_split
from mribundles.bundles import file_sha256, open_bundle, read_metadata
from mribundles.errors import InvalidInputError
from mribundles.io.atomic import atomic_path
from mribundles.physics.coils import rss
from mribundles.physics.fft import ifft2c
from mribundles.physics.masks import mask_from_kspace

__all__ = ["ADAPTED_WEIGHTS", "ADDENDUM", "BundleAdaptation", "acquired_items", "adapt_and_reconstruct", "load_weights"]

ADAPTED_WEIGHTS, ADDENDUM = "model.pt", "README.md"
# Below this share of sampled k-space a file counts as undersampled (evaluation.py's criterion).
MIN_SAMPLED_FRACTION = 0.95


def _source(item: dict) -> tuple[str, int]:
    meta = item.get("kspace_meta_dict", {})
    return str(meta.get("filename_or_obj", "?")), int(meta.get("slice", -1))


def acquired_items(datalist: Sequence[dict], preprocessing: Callable[[dict], dict], mask: str = "none",
                   loss_fraction: float = 0.4, holdout_fraction: float = 0.1, unit: str = "auto") -> list[dict]:
    """The scans to adapt on, through a bundle's preprocessing, checked before anything runs.

    Args:
        datalist: ``mribundles.data.kspace_slices`` entries (a file or a folder of files).
        preprocessing: the bundle's preprocessing (LoadKspaced, UndersampleKspaced, ...).
        mask: the bundle's ``mask`` id: "none" adapts on the data as acquired (its mask from its
            non-zero samples); a mask kind undersamples fully sampled data retrospectively.
        loss_fraction, holdout_fraction, unit: the split that must be possible on every scan.

    Returns:
        [{"kspace": complex (coil, ky, kx), "mask": bool (ky, kx), "file": str, "slice": int}].

    Raises:
        InvalidInputError (naming the file): fully sampled data with mask "none" (nothing to
        split), undersampled data with a drawn mask, a coil count unlike the first scan's, too
        few samples outside the calibration centre to split; and whatever the loaders refuse.
    """
    items = []
    for entry in datalist:
        item = preprocessing(dict(entry))
        path, index = _source(item)
        kspace, sampled = torch.as_tensor(item["kspace"]), torch.as_tensor(item["mask"]).to(torch.bool)
        _check_sampling(entry, mask, path)
        if items and kspace.shape[-3] != items[0]["kspace"].shape[-3]:
            raise InvalidInputError(f"{kspace.shape[-3]} coils, but {items[0]['file']} has {items[0]['kspace'].shape[-3]}; "
                                    "adapt on scans of one coil configuration at a time", path)
        try:
            ssdu_split(sampled.cpu(), loss_fraction, holdout_fraction, 0, 0, unit)
        except UnsplittableMaskError as error:
            raise InvalidInputError(f"cannot split the acquired samples for self-supervision: {error}", path) from None
        items.append({"kspace": kspace, "mask": sampled, "file": path, "slice": index})
    if not items:
        raise InvalidInputError("no k-space to adapt on")
    return items


def _check_sampling(entry: dict, mask: str, path: str) -> None:
    """Fully sampled data needs a drawn mask; a drawn mask needs fully sampled data."""
    from mribundles.transforms import LoadKspaced

    fraction = float(mask_from_kspace(LoadKspaced("kspace")(dict(entry))["kspace"]).float().mean())
    if mask == "none" and fraction >= MIN_SAMPLED_FRACTION:
        raise InvalidInputError(f"k-space is fully sampled ({100 * fraction:.0f}% of samples), so there is nothing to "
                                "split for self-supervision; undersample it with --mask (e.g. random1d)", path)
    if mask != "none" and fraction < MIN_SAMPLED_FRACTION:
        raise InvalidInputError(f"--mask {mask} undersamples fully sampled k-space, but only {100 * fraction:.1f}% "
                                "is sampled; use --mask none for data as acquired", path)


def load_weights(network: nn.Module, path: str | os.PathLike, device: torch.device | str) -> nn.Module:
    """Load a state dict (or a CheckpointSaver's ``{"model": state_dict}``) into the network."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trained weights (ckpt_path)")
    state = torch.load(path, map_location=device, weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    network.load_state_dict(state)
    return network.to(device)


class BundleAdaptation:
    """Zero-shot SSDU adaptation of a bundle's network to the scans of its ``kspace_file``.

    ``run()`` reads and checks every scan (`acquired_items`), loads ``ckpt_path``, adapts
    (`ssdu.adapt` with ``settings``) and writes ``output_dir/model.pt`` (a state dict like the
    bundle's ``models/model.pt``) and ``output_dir/README.md`` (the model-card addendum), each
    atomically. Bad input stops it before anything is written, and a network it cannot adapt
    (`models.kspace_model`) before any scan is read.

    Args:
        bundle_root: the bundle's folder (its metadata names the bundle and version).
        network: the bundle's network, on its device.
        ckpt_path: the weights to start from.
        datalist, preprocessing, mask: as `acquired_items`.
        output_dir: where the adapted weights and addendum go.
        network_input: the bundle's ``prepare_batch`` input key; only "kspace" is adapted.
        mask_settings: the drawn mask's acceleration, center_fraction and seed, for the addendum.
        inference_overrides: ids that inference.json needs to run the adapted weights (e.g.
            ``{"sampling": "cartesian"}``), for the addendum's command line.
        settings: keyword arguments of `ssdu.adapt` (steps, lr, loss_fraction, holdout_fraction,
            val_every, patience, seed, unit).
        progress: show a progress bar.
    """

    def __init__(self, bundle_root: str, network: nn.Module, ckpt_path: str, datalist: Sequence[dict],
                 preprocessing: Callable[[dict], dict], mask: str, output_dir: str, network_input: str = "kspace",
                 mask_settings: dict | None = None, inference_overrides: dict | None = None,
                 settings: dict | None = None, progress: bool = True):
        self.bundle_root, self.network, self.ckpt_path = Path(bundle_root), network, Path(ckpt_path)
        self.datalist, self.preprocessing, self.mask = datalist, preprocessing, mask
        self.output_dir, self.network_input = Path(output_dir), network_input
        self.mask_settings, self.inference_overrides = dict(mask_settings or {}), dict(inference_overrides or {})
        self.settings, self.progress = dict(settings or {}), progress

    def run(self) -> dict:
        """Adapt and write; returns {"weights": path, "sha256", "addendum": path, "result": AdaptationResult}."""
        try:
            model = kspace_model(self.network, self.network_input)
        except InvalidInputError as error:  # name the bundle, as the command line reports it
            raise InvalidInputError(error.problem, self.bundle_root) from None
        split = {k: self.settings[k] for k in ("loss_fraction", "holdout_fraction", "unit") if k in self.settings}
        items = acquired_items(self.datalist, self.preprocessing, self.mask, **split)
        device = next(self.network.parameters()).device
        load_weights(self.network, self.ckpt_path, device)
        result = adapt(model, items, progress=self.progress, **self.settings)
        weights = self.output_dir / ADAPTED_WEIGHTS
        with atomic_path(weights) as tmp:
            torch.save(self.network.state_dict(), tmp)
        sha256 = file_sha256(weights)
        addendum = self.output_dir / ADDENDUM
        mask = self.mask if self.mask == "none" else " ".join([self.mask, *(f"{k}={v}" for k, v in self.mask_settings.items())])
        text = model_card_addendum(self.bundle_root, self.ckpt_path, items, mask, self.settings, result, sha256,
                                   self.inference_overrides)
        with atomic_path(addendum) as tmp:
            tmp.write_text(text, encoding="utf-8")
        return {"weights": weights, "sha256": sha256, "addendum": addendum, "result": result}


def model_card_addendum(bundle_root: Path, ckpt_path: Path, items: Sequence[dict], mask: str, settings: dict,
                        result: AdaptationResult, sha256: str, inference_overrides: dict | None = None) -> str:
    """The Markdown addendum to the bundle's model card that travels with adapted weights."""
    meta = read_metadata(bundle_root)
    name, version = meta.get("name", bundle_root.name), meta.get("version", "?")
    scans: dict[str, list[float]] = {}
    for item in items:
        scans.setdefault(item["file"], []).append(float(item["mask"].float().mean()))
    scan_rows = [f"| `{path}` | {len(f)} | {100 * sum(f) / len(f):.1f} |" for path, f in scans.items()]
    setting_rows = [f"| {key} | {value} |" for key, value in sorted(settings.items())]
    extra = "".join(f" --{key} {value}" for key, value in (inference_overrides or {}).items())
    stop = "early stop (held-out loss no longer improving)" if result.stopped_early else "step limit"
    lowest_step, lowest = min(result.history, key=lambda h: h[1])
    if result.best_step == 0 and lowest < result.start_loss:  # a fall under min_improvement
        stop += (f"; its lowest held-out loss, {lowest:.4f} at step {lowest_step}, fell by less than "
                 "min_improvement requires, so these are the starting weights")
    return "\n".join([
        f"# Adapted weights: {name} {version}",
        "",
        f"`{ADAPTED_WEIGHTS}` here is `{name}` version {version} (`{ckpt_path.name}`, sha256 "
        f"`{file_sha256(ckpt_path)}`) fine-tuned on the scans below with no reference image, by "
        "zero-shot self-supervision via data undersampling (SSDU: Yaman et al., MRM 2020; Yaman et al., "
        "ICLR 2022): the acquired samples were split into what the network saw and what the loss was "
        "taken on, and a fixed held-out subset chose the weights and when to stop.",
        "",
        f"- adapted weights sha256: `{sha256}`",
        f"- written: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- mask: `{mask}` ({'as acquired' if mask == 'none' else 'retrospective undersampling of fully sampled data'})",
        f"- steps: {result.steps_run} of at most {result.max_steps} ({stop}); weights kept from step {result.best_step}",
        f"- held-out k-space loss (normalised l1 + l2): {result.start_loss:.4f} before, {result.best_loss:.4f} after",
        f"- seconds: {result.seconds:.1f}",
        "",
        "| scan | slices | sampled % |",
        "|---|---|---|",
        *scan_rows,
        "",
        "| setting | value |",
        "|---|---|",
        *setting_rows,
        "",
        "Run them with the bundle's inference config:",
        "",
        f"    python -m monai.bundle run --config_file {name}/configs/inference.json --kspace_file <scan>{extra} "
        f"--ckpt_path <this folder>/{ADAPTED_WEIGHTS}",
        "",
        "Limits: the held-out loss measures agreement with unseen acquired samples, not image quality "
        "against a reference. The weights are adapted to these scans' protocol (coils, matrix, sampling); "
        "use them on scans like these, and keep the bundle's own weights for anything else.",
        "",
    ])


def adapt_and_reconstruct(bundle_dir: str | os.PathLike, kspace: torch.Tensor, mask: torch.Tensor,
                          reference: torch.Tensor | None = None, device: str | torch.device = "cpu",
                          overrides: dict | None = None, progress: bool = False) -> dict:
    """Zero-shot adaptation of a bundle on one undersampled slice, and its reconstructions.

    The bundle is opened with its adapt.json over its inference.json (`bundles.open_bundle`): the
    network and weights from the one, the adaptation settings from the other (``overrides``, e.g.
    ``{"adapt_steps": 100}``, change any id they define; another id is refused). A bundle with
    no adapt.json (U-Net, ReconResNet: magnitude networks, `models.kspace_model`) is refused.
    Only the samples in `mask` are used; `reference` (if given) scores the result afterwards and
    never enters the adaptation.

    Args:
        bundle_dir: a Cartesian reconstruction bundle with configs/adapt.json.
        kspace: complex (coil, ky, kx), fully sampled or already undersampled.
        mask: bool (ky, kx), the acquired samples.
        reference: real (ky, kx), e.g. the fully sampled RSS, to score against.
        device: torch device.
        overrides: config ids to override.
        progress: show a progress bar.

    Returns:
        {"bundle", "version", "settings", "adaptation": {start_loss, best_loss, best_step,
         steps_run, max_steps, seconds, history}, "images": {"zero-filled", "before", "after"}
         (ky, kx) on the CPU}, and with a reference "metrics": {method: {"psnr", "psnr_head"}}
        (PSNR over the image and inside `metrics.head_mask(reference)`, both with the
        reference's maximum as peak) and "head_fraction".
    """
    device = torch.device(device)
    # The inference config with the adapt.json overlay: an override of an id neither defines is refused.
    bundle = open_bundle(bundle_dir, ["inference", "adapt"], {"device": device, **(overrides or {})})
    settings = dict(bundle.get("adaptation#settings"))
    model = kspace_model(bundle.network(), bundle.get("prepare_batch").input_key)
    mask = torch.as_tensor(mask).to(device=device, dtype=torch.bool)
    measured = torch.as_tensor(kspace).to(device=device, dtype=torch.complex64) * mask

    def reconstruct() -> torch.Tensor:
        with torch.no_grad():
            return model.image(measured[None], mask[None])[0, 0].cpu()

    images = {"zero-filled": rss(ifft2c(measured)).cpu(), "before": reconstruct()}
    result = adapt(model, [{"kspace": measured, "mask": mask}], progress=progress, **settings)
    images["after"] = reconstruct()
    meta = bundle.metadata
    out = {"bundle": meta.get("name"), "version": meta.get("version"), "settings": settings,
           "adaptation": {k: getattr(result, k) for k in ("start_loss", "best_loss", "best_step", "steps_run", "max_steps", "seconds", "history")},
           "images": images}
    if reference is not None:
        out.update(_score(torch.as_tensor(reference).to("cpu", torch.float32), images))
    return out


def _score(reference: torch.Tensor, images: dict) -> dict:
    from mribundles.metrics import head_mask, masked_psnr, psnr

    head = head_mask(reference)
    maxval = reference.max()
    metrics = {name: {"psnr": psnr(reference, image, maxval), "psnr_head": masked_psnr(reference, image, head, maxval)}
               for name, image in images.items()}
    return {"metrics": metrics, "head_fraction": float(head.float().mean())}
