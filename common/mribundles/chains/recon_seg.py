"""Reconstruction -> volume assembly -> tissue segmentation, in memory on one device.

`ReconSegChain.process` is the process function of an ignite ``Engine`` whose items are studies
(``{"kspace": file}``), so a chain bundle runs with ``python -m monai.bundle run`` like any other
and ``--tracking mlflow`` attaches MONAI's MLflow handler to it: the chain's run is the parent,
and each stage opens a nested run (`mribundles.tracking.stage_run`) with its bundle, weights and
outputs, so the lineage k-space -> reconstruction -> segmentation reads as a tree.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine

from mribundles.chains.stages import ReconStage, SegStage
from mribundles.errors import InvalidInputError
from mribundles.handlers.seg_overlay import save_overlay_png
from mribundles.io.images import write_image
from mribundles.report import StageEvents, announce_stage
from mribundles.tracking import bundle_params, stage_run

__all__ = ["ReconSegChain", "check_compatible", "kspace_affine"]


def kspace_affine(kspace_file: str | os.PathLike, voxel_size=(1.0, 1.0, 1.0)) -> torch.Tensor:
    """The (column, row, slice) -> RAS mm affine of a multi-slice k-space file.

    The affine the file states (`io.kspace.stated_affine`: an ISMRMRD file's geometry, or the
    ``affine`` attribute of fastMRI HDF5 files written by this library); other files get a
    diagonal affine from ``voxel_size`` (in-plane column, row spacing, slice spacing).
    """
    from mribundles.io.kspace import kspace_shape, stated_affine

    path = Path(kspace_file)
    shape = kspace_shape(path)  # refuses a missing, corrupt or truncated file, naming it
    if len(shape) != 4:
        raise InvalidInputError(f"expected multi-slice multi-coil k-space (slice, coil, ky, kx), got shape {tuple(shape)}", path)
    affine = stated_affine(path)
    if affine is not None:
        return torch.as_tensor(affine)
    return torch.as_tensor(np.diag([*map(float, voxel_size), 1.0]))


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


class ReconSegChain:
    """One study: k-space file -> reconstructed volume -> tissue labels; writes both as NIfTI
    (``<stem>_recon.nii.gz``, ``<stem>_seg.nii.gz``) and ``<stem>_overview.png``.

    Args:
        recon, seg: the stages (built from their bundles by reference).
        output_dir: destination folder.
        voxel_size: geometry of k-space files without an ``affine`` attribute.
    """

    def __init__(self, recon: ReconStage, seg: SegStage, output_dir: str, voxel_size=(1.0, 1.0, 1.0)):
        check_compatible(recon, seg)
        self.recon, self.seg = recon, seg
        self.output_dir = Path(output_dir)
        self.voxel_size = tuple(voxel_size)

    def engine(self) -> Engine:
        """An ignite engine whose items are studies (``{"kspace": file}``): bundle handlers and
        ``--tracking mlflow`` attach to it as to any MONAI evaluator. It fires
        `mribundles.report.StageEvents` as each stage starts (a progress bar shows them)."""
        engine = Engine(self.process)
        engine.register_events(*StageEvents)
        return engine

    def process(self, engine: Engine | None, item: dict) -> dict:
        kspace_file = item["kspace"]
        stem = Path(kspace_file).name.split(".")[0]
        affine = kspace_affine(kspace_file, self.voxel_size)

        announce_stage(engine, "reconstruction", 1, 2)
        with stage_run(engine, "reconstruction", self.recon.lineage(kspace_file)) as recon_run:
            start = time.perf_counter()
            volume = self.recon(kspace_file, affine.to(self.recon.device))
            recon_run.metric("seconds", time.perf_counter() - start)

        announce_stage(engine, "segmentation", 2, 2)
        with stage_run(engine, "segmentation", bundle_params(self.seg.root)) as seg_run:
            start = time.perf_counter()
            labels, (net_image, net_labels) = self.seg(volume)
            seg_run.metric("seconds", time.perf_counter() - start)

        # The chain's outputs, after the last stage: the only copies to the host and to disk.
        outputs = {
            "recon": self.output_dir / f"{stem}_recon.nii.gz",
            "seg": self.output_dir / f"{stem}_seg.nii.gz",
            "overview": self.output_dir / f"{stem}_overview.png",
        }
        write_image(outputs["recon"], volume[0].cpu().numpy(), volume.affine.cpu().numpy())
        write_image(outputs["seg"], labels[0].cpu().numpy().astype(np.uint8), labels.affine.cpu().numpy())
        save_overlay_png(outputs["overview"], net_image[0].cpu().float(), net_labels[0].cpu(), self.seg.class_names)
        for index, name in enumerate(self.seg.class_names, start=1):
            seg_run.metric(f"voxels_{name.replace(' ', '_')}", float((labels == index).sum()))
        recon_run.artifact(outputs["recon"])
        seg_run.artifact(outputs["seg"])
        seg_run.artifact(outputs["overview"])
        return {"kspace": kspace_file, **{k: str(v) for k, v in outputs.items()}}
