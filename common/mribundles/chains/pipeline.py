"""The one chain class: k-space -> reconstruction, then any of super-resolution, segmentation and
registration to a template, in memory on one device.

`PipelineChain.process` is the process function of an ignite ``Engine`` whose items are studies
(``{"kspace": file}``), so a chain bundle runs with ``python -m monai.bundle run`` like any other
and ``--tracking mlflow`` attaches MONAI's MLflow handler to it: the chain's run is the parent,
and each stage opens a nested run (`mribundles.tracking.stage_run`) with its bundle, weights,
seconds and outputs, so the lineage k-space -> reconstruction -> ... reads as a tree.

Which stages run is the chain's only variable: ``brain_mri_recon_seg`` builds it with a
segmentation stage alone, ``brain_mri_pipeline`` with all four (each switchable). The outputs
and the overview figure follow the stages that ran.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine

from mribundles.chains.stages import ReconStage, RegStage, SegStage, SuperResStage
from mribundles.errors import InvalidInputError
from mribundles.handlers.pipeline_overview import overview_panels, save_pipeline_png
from mribundles.io.atomic import atomic_path
from mribundles.io.images import write_image
from mribundles.metrics.registration import registration_report
from mribundles.report import StageEvents, announce_stage
from mribundles.tracking import bundle_params, stage_run

__all__ = ["PipelineChain", "check_compatible", "require_multislice"]


def require_multislice(kspace_file: str | os.PathLike) -> None:
    """Refuse, before any work, a k-space file that is not multi-slice multi-coil: a chain
    assembles its slices into a volume for 3D stages."""
    from mribundles.io.kspace import kspace_shape

    shape = kspace_shape(kspace_file)  # refuses a missing, corrupt or truncated file, naming it
    if len(shape) != 4:
        raise InvalidInputError(f"expected multi-slice multi-coil k-space (slice, coil, ky, kx), got shape {tuple(shape)}", kspace_file)


def check_compatible(upstream, downstream, names: tuple[str, str] = ("reconstruction", "segmentation")) -> None:
    """Refuse, before any work, two consecutive stage bundles that cannot feed each other.

    The upstream bundle's ``pred`` output is compared with the downstream bundle's image input
    (``image``, or ``moving_image`` for a registration bundle): channels, intensity format, a 3D
    network, and the library version both were built with. ``names`` are the stages' roles, for
    the message.
    """
    r_meta, s_meta = upstream.metadata, downstream.metadata
    up, down = names
    bundles = f"{r_meta.get('name')} {r_meta.get('version')} -> {s_meta.get('name')} {s_meta.get('version')}"
    r_out = r_meta["network_data_format"]["outputs"]["pred"]
    inputs = s_meta["network_data_format"]["inputs"]
    s_in = inputs.get("image", inputs.get("moving_image", {}))
    problems = []
    if r_out.get("num_channels") != s_in.get("num_channels"):
        problems.append(f"channels: {up} gives {r_out.get('num_channels')}, {down} takes {s_in.get('num_channels')}")
    if r_out.get("format") != s_in.get("format"):
        problems.append(f"intensity: {up} gives '{r_out.get('format')}' images, {down} takes '{s_in.get('format')}'")
    if len(s_in.get("spatial_shape", [])) != 3:
        problems.append(f"{down} is not a 3D bundle")
    r_lib = r_meta.get("required_packages_version", {}).get("mri-bundles")
    s_lib = s_meta.get("required_packages_version", {}).get("mri-bundles")
    if r_lib and s_lib and r_lib.split(".")[:2] != s_lib.split(".")[:2]:
        problems.append(f"versions: built with mri-bundles {r_lib} and {s_lib}")
    if problems:
        raise InvalidInputError(f"stage bundles do not fit ({bundles}): {'; '.join(problems)}")


@contextmanager
def _timed(engine: Engine | None, name: str, params: dict, stages: list[str]):
    """A stage's nested run (`tracking.stage_run`) that also logs the stage's seconds; the stage
    is announced to the engine's handlers as ``name``'s place in ``stages``."""
    announce_stage(engine, name, stages.index(name) + 1, len(stages))
    with stage_run(engine, name, params) as run:
        start = time.perf_counter()
        yield run
        run.metric("seconds", time.perf_counter() - start)


def _sampled_fraction(mask: torch.Tensor | None) -> float:
    """The fraction of k-space a (1, kx, ky, slice) mask volume keeps; all of it without a mask
    (a bundle that reconstructs the data as given). Every slice has the same size, so this is
    also the mean of the slices' fractions."""
    return 1.0 if mask is None else float(mask.float().mean())


def _host(volume: torch.Tensor) -> np.ndarray:
    """(1, x, y, z) -> (x, y, z) numpy: only for the chain's outputs, after the last stage."""
    return torch.as_tensor(volume)[0].detach().float().cpu().numpy()


class PipelineChain:
    """One study: k-space file -> volume -> (super-resolved volume) -> (tissue labels) ->
    (registration to the template). A stage given as ``None`` is skipped.

    Writes ``<stem>_recon.nii.gz`` and, for the stages that ran, ``<stem>_sr.nii.gz``,
    ``<stem>_seg.nii.gz``, ``<stem>_to_<template>_warped.nii.gz`` and ``_warped_labels.nii.gz``
    (on the template file's grid), ``<stem>_to_<template>_registration.json`` (folding,
    log-Jacobian spread, and Dice and HD95 of the warped labels against the template's); and
    ``<stem>_overview.png``: the zero-filled and reconstructed volumes, then every later stage's.

    Args:
        recon: the reconstruction stage. sr, seg, reg: the optional stages.
        output_dir: destination folder.
        voxel_size: geometry of k-space files without an ``affine`` attribute.
    """

    def __init__(
        self,
        recon: ReconStage,
        sr: SuperResStage | None = None,
        seg: SegStage | None = None,
        reg: RegStage | None = None,
        output_dir: str = ".",
        voxel_size=(1.0, 1.0, 1.0),
    ):
        # Refused before any work: super-resolution takes the reconstruction, and segmentation and
        # registration both take the last image, super-resolved or not.
        last, last_name = (recon, "reconstruction") if sr is None else (sr, "super-resolution")
        if sr is not None:
            check_compatible(recon, sr, ("reconstruction", "super-resolution"))
        for stage, name in ((seg, "segmentation"), (reg, "registration")):
            if stage is not None:
                check_compatible(last, stage, (last_name, name))
        self.recon, self.sr, self.seg, self.reg = recon, sr, seg, reg
        self.output_dir = Path(output_dir)
        self.voxel_size = tuple(voxel_size)

    def engine(self) -> Engine:
        """An ignite engine whose items are studies (``{"kspace": file}``): bundle handlers and
        ``--tracking mlflow`` attach to it as to any MONAI evaluator. It fires
        `mribundles.report.StageEvents` as each stage starts (a progress bar shows them)."""
        engine = Engine(self.process)
        engine.register_events(*StageEvents)
        return engine

    def stage_names(self) -> list[str]:
        """The stages this chain runs, in order."""
        optional = (("super-resolution", self.sr), ("segmentation", self.seg), ("registration", self.reg))
        return ["reconstruction", *(name for name, stage in optional if stage is not None)]

    def process(self, engine: Engine | None, item: dict) -> dict:
        kspace_file = item["kspace"]
        images, seen, registered, runs = self._run_stages(engine, kspace_file)
        stem = Path(kspace_file).name.split(".")[0]
        # After the last stage: one host copy of each volume, for its file and for the figure.
        host = {key: (_host(image), image.affine.cpu().numpy()) for key, image in images.items()}
        outputs = self._write_outputs(stem, host, registered, runs)
        outputs["overview"] = self._write_overview(stem, host, seen, registered)
        runs[list(runs)[-1]].artifact(outputs["overview"])
        return {"kspace": kspace_file, **{k: str(v) for k, v in outputs.items()}}

    def _run_stages(self, engine: Engine | None, kspace_file: str) -> tuple[dict, dict, dict | None, dict]:
        """Every stage in turn, each in its nested run: (volumes by stage key, what the
        reconstruction network saw (``zero_filled`` and ``mask`` volumes, those the bundle makes),
        the registration bundle's outputs or None, the stage runs by key). Nothing leaves the
        device here."""
        images: dict[str, torch.Tensor] = {}
        runs = {}
        stages = self.stage_names()
        require_multislice(kspace_file)
        with _timed(engine, "reconstruction", self.recon.lineage(kspace_file), stages) as runs["recon"]:
            # One pass over the slices gives the reconstruction and, for the figure, the zero-filled
            # image and mask of the same samples, each on the reconstruction's scale and grid.
            seen = self.recon.volumes(kspace_file, keys=("pred", "zero_filled", "mask"), voxel_size=self.voxel_size)
            images["recon"] = volume = seen.pop("pred")
        if self.sr is not None:
            with _timed(engine, "super-resolution", bundle_params(self.sr.root), stages) as runs["sr"]:
                images["sr"] = volume = self.sr(volume)
        labels = None
        if self.seg is not None:
            with _timed(engine, "segmentation", bundle_params(self.seg.root), stages) as runs["seg"]:
                labels, _ = self.seg(volume)
            images["seg"] = labels
        registered = None
        if self.reg is not None:
            with _timed(engine, "registration", {**bundle_params(self.reg.root), "fixed_file": self.reg.fixed_file}, stages) as runs["reg"]:
                registered = self.reg(volume, labels)
        return images, seen, registered, runs

    def _write_outputs(self, stem: str, host: dict, registered: dict | None, runs: dict) -> dict[str, Path]:
        """The stages' volumes (``host``: stage key -> (array, affine)) as NIfTI, the only files
        the chain writes besides the figure; each is an artifact of its stage's run, and the
        segmentation's run also gets the voxel count of every class."""
        outputs = {}
        for key, (volume, affine) in host.items():
            outputs[key] = self.output_dir / f"{stem}_{key}.nii.gz"
            write_image(outputs[key], volume.astype(np.uint8) if key == "seg" else volume, affine)
            runs[key].artifact(outputs[key])
        if "seg" in host:
            labels = host["seg"][0].round()
            for index, name in enumerate(self.seg.class_names, start=1):
                runs["seg"].metric(f"voxels_{name.replace(' ', '_')}", float(np.count_nonzero(labels == index)))
        if registered is not None:
            outputs.update(self._write_registration(registered, stem, runs["reg"]))
        return outputs

    def _write_overview(self, stem: str, host: dict, seen: dict, registered: dict | None) -> Path:
        """``<stem>_overview.png``: a column for each volume of the stages that ran
        (`handlers.pipeline_overview.overview_panels`), the zero-filled one first (``seen``: the
        reconstruction's ``zero_filled`` and ``mask`` volumes, on its grid)."""
        volumes = dict(host)
        sampled = None
        if "zero_filled" in seen:
            volumes["zero_filled"] = (_host(seen["zero_filled"]), seen["zero_filled"].affine.cpu().numpy())
            sampled = _sampled_fraction(seen.get("mask"))
        if registered is not None:
            fixed = registered["fixed_image"].affine.cpu().numpy()
            volumes["registered"] = (_host(registered["moving_image_warped"]), fixed)
            volumes["template"] = (_host(registered["fixed_image"]), fixed)
        path = self.output_dir / f"{stem}_overview.png"
        save_pipeline_png(path, overview_panels(volumes, sampled), self.seg.class_names if self.seg is not None else [])
        return path

    def _write_registration(self, registered: dict, stem: str, run) -> dict[str, Path]:
        """The warped volume and labels on the template file's grid, and the registration's figures."""
        template = Path(self.reg.fixed_file).name.split(".")[0]
        prefix = self.output_dir / f"{stem}_to_{template}"
        outputs = {"warped": Path(f"{prefix}_warped.nii.gz")}
        warped = registered["warped"]
        write_image(outputs["warped"], _host(warped), warped.affine.cpu().numpy())
        fixed_label = registered.get("fixed_label")
        warped_label = registered.get("moving_label_warped")
        if "warped_label" in registered:
            outputs["warped_labels"] = Path(f"{prefix}_warped_labels.nii.gz")
            write_image(outputs["warped_labels"], _host(registered["warped_label"]).round().astype(np.uint8),
                        registered["warped_label"].affine.cpu().numpy())
        report = registration_report(
            torch.as_tensor(registered["pred"]).detach().cpu(),
            mask=torch.as_tensor(registered["fixed_image"]).detach().cpu()[0] > 0.01,
            warped_label=None if warped_label is None else torch.as_tensor(warped_label).detach().cpu(),
            fixed_label=None if fixed_label is None else torch.as_tensor(fixed_label).detach().cpu(),
            class_names=self.reg.class_names,
        )
        outputs["registration"] = Path(f"{prefix}_registration.json")
        with atomic_path(outputs["registration"]) as tmp:
            tmp.write_text(json.dumps(report, indent=2) + "\n")
        for key, value in report.items():
            run.metric(key, value)
        for key in ("warped", "warped_labels", "registration"):
            if key in outputs:
                run.artifact(outputs[key])
        return outputs
