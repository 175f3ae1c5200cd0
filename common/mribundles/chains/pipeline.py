"""The full pipeline: reconstruction -> super-resolution -> segmentation -> registration to a
template, in memory on one device, each stage after reconstruction switchable.

Like `ReconSegChain`, `PipelineChain.process` is the process function of an ignite ``Engine``
whose items are studies (``{"kspace": file}``): the chain bundle runs with
``python -m monai.bundle run``, and ``--tracking mlflow`` gives it a parent run with one nested
run per stage.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine

from mribundles.chains.recon_seg import check_compatible, kspace_affine
from mribundles.chains.stages import ReconStage, RegStage, SegStage, SuperResStage
from mribundles.handlers.pipeline_overview import save_pipeline_png
from mribundles.io.atomic import atomic_path
from mribundles.io.images import write_image
from mribundles.metrics.registration import registration_report
from mribundles.report import StageEvents, announce_stage
from mribundles.tracking import bundle_params, stage_run

__all__ = ["PipelineChain"]


@contextmanager
def _timed(engine: Engine | None, name: str, params: dict, stages: list[str]):
    """A stage's nested run (`tracking.stage_run`) that also logs the stage's seconds; the stage
    is announced to the engine's handlers as ``name``'s place in ``stages``."""
    announce_stage(engine, name, stages.index(name) + 1, len(stages))
    with stage_run(engine, name, params) as run:
        start = time.perf_counter()
        yield run
        run.metric("seconds", time.perf_counter() - start)


def _host(volume: torch.Tensor) -> np.ndarray:
    """(1, x, y, z) -> (x, y, z) numpy: only for the chain's outputs, after the last stage."""
    return torch.as_tensor(volume)[0].detach().float().cpu().numpy()


class PipelineChain:
    """One study: k-space file -> volume -> (super-resolved volume) -> (tissue labels) ->
    (registration to the template). A stage given as ``None`` is skipped.

    Writes ``<stem>_recon.nii.gz``, ``<stem>_sr.nii.gz``, ``<stem>_seg.nii.gz``,
    ``<stem>_to_<template>_warped.nii.gz`` and ``_warped_labels.nii.gz`` (on the template file's
    grid), ``<stem>_to_<template>_registration.json`` (folding, log-Jacobian spread, and Dice and
    HD95 of the warped labels against the template's), and ``<stem>_overview.png``.

    Args:
        recon: the reconstruction stage. sr, seg, reg: the optional stages.
        output_dir: destination folder.
        voxel_size: geometry of k-space files without an ``affine`` attribute.
    """

    def __init__(
        self,
        recon: ReconStage,
        sr: SuperResStage | None,
        seg: SegStage | None,
        reg: RegStage | None,
        output_dir: str,
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
        """An ignite engine whose items are studies (``{"kspace": file}``), firing
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
        images, registered, runs = self._run_stages(engine, kspace_file)
        outputs = self._write_outputs(Path(kspace_file).name.split(".")[0], images, registered, runs)
        return {"kspace": kspace_file, **{k: str(v) for k, v in outputs.items()}}

    def _run_stages(self, engine: Engine | None, kspace_file: str) -> tuple[dict, dict | None, dict]:
        """Every stage in turn, each in its nested run: (volumes by stage key, the registration
        bundle's outputs or None, the stage runs by key). Nothing leaves the device here."""
        images: dict[str, torch.Tensor] = {}
        runs = {}
        stages = self.stage_names()
        affine = kspace_affine(kspace_file, self.voxel_size)
        with _timed(engine, "reconstruction", self.recon.lineage(kspace_file), stages) as runs["recon"]:
            images["recon"] = volume = self.recon(kspace_file, affine.to(self.recon.device))
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
        return images, registered, runs

    def _write_outputs(self, stem: str, images: dict, registered: dict | None, runs: dict) -> dict[str, Path]:
        """The chain's outputs, after the last stage: the only copies to the host and to disk."""
        host = {key: _host(image) for key, image in images.items()}  # one copy each, for file and figure
        grids = {key: image.affine.cpu().numpy() for key, image in images.items()}
        outputs = {}
        for key in images:
            outputs[key] = self.output_dir / f"{stem}_{key}.nii.gz"
            write_image(outputs[key], host[key].astype(np.uint8) if key == "seg" else host[key], grids[key])
            runs[key].artifact(outputs[key])
        panels = [("reconstruction", host["recon"], grids["recon"], None)]
        if "sr" in images:
            panels.append(("super-resolved", host["sr"], grids["sr"], None))
        if "seg" in images:
            panels.append(("tissue labels", panels[-1][1], panels[-1][2], host["seg"]))
        if registered is not None:
            outputs.update(self._write_registration(registered, stem, runs["reg"]))
            fixed = registered["fixed_image"]
            panels.append(("registered to the template", _host(registered["moving_image_warped"]), fixed.affine.cpu().numpy(), None))
            panels.append(("template", _host(fixed), fixed.affine.cpu().numpy(), None))
        outputs["overview"] = self.output_dir / f"{stem}_overview.png"
        save_pipeline_png(outputs["overview"], panels, self.seg.class_names if self.seg is not None else [])
        runs[list(runs)[-1]].artifact(outputs["overview"])
        return outputs

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
