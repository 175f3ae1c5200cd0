"""The stages a chain composes, each built from a stage bundle's own configs and weights.

A stage is loaded by reference: the chain names a bundle (its metadata ``name``, found like
`bundle_root`, or a folder) and the stage opens it (`bundles.open_bundle`: its ``inference.json``,
its weights loaded with ``weights_only=True``). Every stage keeps one contract, the bundle's own
evaluator's: its preprocessing without the file loaders, its inferer with the network, its
postprocessing without the writers. Nothing of a stage bundle is copied into the chain's configs,
so a retrained or re-published stage bundle is picked up as it is.

Between stages the data is a `MetaTensor` on the chain's device: the reconstruction stage returns
the volume (1, x, y, z) with its affine, and the super-resolution, segmentation and registration
stages take it from there. Only the chain's inputs (k-space, a registration template) are read
from files and only its final outputs are written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from monai.data import MetaTensor

from mribundles.bundles import Bundle, find_bundle, open_bundle, open_recon_bundle
from mribundles.io.geometry import assemble_volume, stack_volume
from mribundles.report import progress

__all__ = ["ReconStage", "RegStage", "SegStage", "SuperResStage", "batch_size_for", "find_bundle", "optional_stage"]


def optional_stage(stage: type, bundle: str | os.PathLike | None, *args):
    """``stage(bundle, *args)``, or None when the stage is switched off: ``bundle`` None, empty,
    ``"none"`` or ``"null"``. MONAI's command line drops a ``None`` override and passes
    ``null`` as a string, so ``--sr_bundle none`` is how a user switches a stage off there."""
    return None if switched_off(bundle) else stage(bundle, *args)


def switched_off(value) -> bool:
    """None, empty, ``"none"`` or ``"null"``: how a config or the command line leaves an
    optional setting unset (MONAI's CLI drops a ``None`` override and passes ``null`` as a string)."""
    return value is None or str(value).strip().lower() in ("", "none", "null")


def _open_stage_bundle(stage, overrides: dict | None = None) -> Bundle:
    """Open ``stage.bundle`` on ``stage.device`` (a torch.device; the command line gives a
    string) and set the stage's ``device``, ``root``, ``metadata`` and ``network`` (the bundle's
    weights, loaded with weights_only)."""
    stage.device = torch.device(stage.device)
    opened = open_bundle(stage.bundle, overrides={"device": stage.device, **(overrides or {})})
    stage.root, stage.metadata, stage.network = opened.root, opened.metadata, opened.network()
    return opened


def _fresh(volume: MetaTensor, source: str) -> MetaTensor:
    """The volume with its affine and name only: the next stage starts a trace of its own."""
    return MetaTensor(volume.as_tensor(), affine=volume.affine, meta={"filename_or_obj": source})


@dataclass
class ReconStage:
    """Reconstruction of every slice of a multi-slice k-space file, in batches, on ``device``.

    The bundle is opened and its weights loaded once; each call runs its stage contract per
    batch of slices: the bundle's loader and preprocessing (undersample, zero-fill, normalise)
    on the host, as in the bundle itself, then its inferer with the network and its
    postprocessing (which restores the intensity scale) on ``device``. The slices are assembled
    on the device into one volume on the k-space file's grid (`io.geometry.assemble_volume`).

    The sampling (``mask``, ``acceleration``, ``center_fraction``, ``seed``) is an argument of
    each call; the fields are only the defaults of calls that give none.

    ``batch_size="auto"`` sizes batches to the device: on a GPU, one slice is run alone to
    measure its peak memory and batches take half of the free memory (`batch_size_for`); on the
    CPU, where memory rarely binds and larger batches do not run faster, 4.

    ``weights`` replaces the bundle's own ``ckpt_path``: a state dict for the same network, such
    as the reconstruction weights fine-tuned through a segmenter by a chain's ``train.json``.
    """

    bundle: str | os.PathLike
    device: torch.device
    mask: str = "random1d"
    acceleration: float = 4
    center_fraction: float = 0.08
    seed: int = 0
    batch_size: int | str = "auto"
    weights: str | os.PathLike | None = None
    root: Path = field(init=False)
    metadata: dict = field(init=False)

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)  # "--device cuda" on the command line is a string
        self.weights = None if switched_off(self.weights) else self.weights
        overrides = {"device": self.device}
        if self.weights is not None:
            overrides["ckpt_path"] = str(self.weights)
        # Chains read Cartesian multi-slice k-space: a bundle that takes both samplings is told so.
        self.opened = open_recon_bundle(self.bundle, "cartesian", overrides)
        self.root, self.metadata, self.network = self.opened.root, self.opened.metadata, self.opened.network()

    def sampling(self, **settings) -> dict:
        """The bundle's sampling ids for one call: ``settings`` given (not None), else the fields."""
        defaults = {"mask": self.mask, "acceleration": self.acceleration, "center_fraction": self.center_fraction,
                    "seed": self.seed}
        return {key: defaults[key] if settings.get(key) is None else settings[key] for key in defaults}

    def __call__(self, kspace_file: str | os.PathLike, affine: torch.Tensor | None = None, *,
                 voxel_size=(1.0, 1.0, 1.0), **sampling) -> MetaTensor:
        """(1, x, y, z) MetaTensor on the device: x along k-space columns, y along rows, z slices.

        The grid is the file's (`io.geometry.kspace_affine`, ``voxel_size`` for a file that
        states none), or ``affine`` when the caller gives one. ``sampling``: ``mask``,
        ``acceleration``, ``center_fraction``, ``seed``; those not given are the stage's.
        """
        return self.volumes(kspace_file, affine, voxel_size=voxel_size, **sampling)["pred"]

    def volumes(self, kspace_file: str | os.PathLike, affine: torch.Tensor | None = None, *,
                keys: tuple[str, ...] = ("pred",), voxel_size=(1.0, 1.0, 1.0), mask: str | None = None,
                acceleration: float | None = None, center_fraction: float | None = None,
                seed: int | None = None) -> dict[str, MetaTensor]:
        """Like the call, for every key of ``keys`` that the bundle's items hold after its
        postprocessing, in one pass: ``pred``, and for figures ``zero_filled`` (on ``pred``'s
        intensity scale: the bundle's postprocessing restores both) and ``mask``. Each is a
        (1, x, y, z) MetaTensor on the device, on the same grid."""
        from monai.data import DataLoader, Dataset

        from mribundles.data import kspace_slices

        run = self.opened.with_settings(self.sampling(mask=mask, acceleration=acceleration,
                                                      center_fraction=center_fraction, seed=seed))
        dataset = Dataset(kspace_slices(kspace_file), _slice_preprocessing(run))
        batches = DataLoader(dataset, batch_size=self._batch_size(run, dataset), shuffle=False, num_workers=0)
        parts = [_reconstruct(run, batch, keys, self.device) for batch in progress(batches, "batch", desc="reconstruction")]
        volumes = {}
        for key in parts[0]:  # the keys of ``keys`` that the bundle's items hold
            slices = torch.cat([part[key] for part in parts])
            volumes[key] = assemble_volume(slices, kspace_file, voxel_size) if affine is None else stack_volume(slices, affine)
            volumes[key].meta["filename_or_obj"] = str(kspace_file)
        return volumes

    def lineage(self, kspace_file: str | os.PathLike, **settings) -> dict:
        """MLflow params of a run: the bundle, the weights that ran (their own sha256 when
        ``weights`` replaced the bundle's), the input and the undersampling (``settings`` as the
        call's sampling arguments)."""
        from mribundles.bundles import file_sha256
        from mribundles.tracking import bundle_params

        params = {**bundle_params(self.root), "kspace_file": str(kspace_file), **self.sampling(**settings)}
        if self.weights is not None:
            params.update(weights=str(self.weights), weights_sha256=file_sha256(self.weights))
        return params

    def _batch_size(self, run: Bundle, dataset) -> int:
        if self.batch_size != "auto":
            return int(self.batch_size)
        if self.device.type != "cuda":
            return 4
        from monai.data import list_data_collate

        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        baseline = torch.cuda.memory_allocated(self.device)
        _reconstruct(run, list_data_collate([dataset[0]]), device=self.device)
        peak = torch.cuda.max_memory_allocated(self.device) - baseline
        free, _ = torch.cuda.mem_get_info(self.device)
        return batch_size_for(free, peak)


def _slice_preprocessing(run: Bundle):
    """The bundle's loader, then its preprocessing: a slice item -> the network's inputs."""
    from monai.transforms import Compose

    return Compose([run.loaders(), run.preprocessing()])


def _reconstruct(run: Bundle, batch: dict, keys=("pred",), device=None) -> dict[str, torch.Tensor]:
    """A collated batch of slices through the bundle (`Bundle.infer`) -> {key: (B, ky, kx)} on
    ``device``: ``pred`` the float magnitude images in the k-space file's units. Keys the items
    do not hold are left out (a bundle whose preprocessing makes no ``zero_filled`` image)."""
    items = run.infer(batch)
    return {key: torch.stack([torch.as_tensor(item[key]).reshape(item[key].shape[-2:]) for item in items])
            .to(device=device, dtype=torch.float32 if key != "mask" else None) for key in keys if key in items[0]}


def batch_size_for(free_bytes: int, bytes_per_slice: int, share: float = 0.5, limit: int = 64) -> int:
    """Slices per batch: ``share`` of the free device memory over one slice's peak, 1 to ``limit``.

    Half, not all: the allocator fragments, and the assembled volume and the next stage need
    room on the same device.
    """
    return max(1, min(limit, int(free_bytes * share) // max(1, bytes_per_slice)))


@dataclass
class SegStage:
    """Segmentation of an in-memory volume with a segmentation bundle's preprocessing (minus its
    file loader), inferer, network and postprocessing (minus its writer): argmax, labels cleared
    where the image has no tissue, and the labels mapped back onto the input volume's grid.

    The postprocessing is the contract with the bundle: it takes ``pred``, the logits on the
    network's grid, and leaves the labels there in ``pred`` and on the input's grid in ``labels``.
    """

    bundle: str | os.PathLike
    device: torch.device
    root: Path = field(init=False)
    metadata: dict = field(init=False)

    def __post_init__(self) -> None:
        opened = _open_stage_bundle(self)
        self.preprocessing, self.inferer, self.postprocessing = opened.preprocessing(), opened.inferer, opened.postprocessing()
        self.class_names = opened.get("class_names")

    def __call__(self, volume: MetaTensor) -> tuple[MetaTensor, MetaTensor]:
        """(labels on the input grid, (image, labels) on the network's grid for figures)."""
        data = self.preprocessing({"image": volume})
        image = data["image"]
        with torch.no_grad():
            logits = self.inferer(image[None], self.network)[0]
        data["pred"] = MetaTensor(logits, meta=dict(image.meta), applied_operations=list(image.applied_operations))
        data = self.postprocessing(data)
        return data["labels"].to(torch.uint8), (image, data["pred"].to(torch.uint8))


@dataclass
class SuperResStage:
    """Super-resolution of an in-memory volume with a super-resolution bundle's preprocessing
    (minus its file loader, no simulated degradation), inferer, network and postprocessing (minus
    its writer): the volume on the finer grid that its affine implies, in its own orientation."""

    bundle: str | os.PathLike
    device: torch.device
    root: Path = field(init=False)
    metadata: dict = field(init=False)

    def __post_init__(self) -> None:
        opened = _open_stage_bundle(self, {"degradation": "none"})
        self.preprocessing, self.inferer, self.postprocessing = opened.preprocessing(), opened.inferer, opened.postprocessing()

    def __call__(self, volume: MetaTensor) -> MetaTensor:
        """(1, x, y, z) -> (1, fx*x, fy*y, fz*z) MetaTensor on the device, with the finer affine."""
        data = self.preprocessing({"image": volume})
        image = data["image"]
        with torch.no_grad():
            pred = self.inferer(image.as_tensor()[None], self.network)[0]
        data["pred"] = MetaTensor(pred, meta=dict(image.meta), applied_operations=list(image.applied_operations))
        return _fresh(self.postprocessing(data)["sr"], str(volume.meta.get("filename_or_obj", "volume")))


@dataclass
class RegStage:
    """Registration of an in-memory volume (and its labels) to a template file with a
    registration bundle's preprocessing, inferer, network and warps (minus its loader and writers).

    ``fixed_file``/``fixed_label_file`` default to the bundle's own (the MNI152 template and its
    tissue labels). The template is the chain's input and is read from its file; the moving
    volume and labels come from the previous stages in memory.
    """

    bundle: str | os.PathLike
    device: torch.device
    fixed_file: str | None = None
    fixed_label_file: str | None = None
    root: Path = field(init=False)
    metadata: dict = field(init=False)

    def __post_init__(self) -> None:
        opened = _open_stage_bundle(self)
        self.fixed_file = self.fixed_file or opened.get("fixed_file")
        self.fixed_label_file = self.fixed_label_file or opened.get("fixed_label_file")
        self.load = opened.loaders()  # the template is the chain's input: read with the bundle's own loader
        self.preprocessing, self.inferer, self.postprocessing = opened.preprocessing(), opened.inferer, opened.postprocessing()
        self.class_names = opened.get("class_names")

    def __call__(self, volume: MetaTensor, labels: MetaTensor | None = None) -> dict:
        """The bundle's outputs for one moving volume: ``warped`` (and ``warped_label``) on the
        template file's grid, and on the registration grid ``fixed_image``, ``moving_image``
        (affinely aligned), ``moving_image_warped``, ``moving_label_warped``, ``fixed_label`` and
        the displacement ``pred`` (3, X, Y, Z)."""
        data = self.load({"fixed_image": self.fixed_file, "fixed_label": self.fixed_label_file})
        data["moving_image"] = _fresh(volume, str(volume.meta.get("filename_or_obj", "volume")))
        if labels is not None:
            data["moving_label"] = _fresh(labels.float(), str(labels.meta.get("filename_or_obj", "labels")))
        data = self.preprocessing(data)
        with torch.no_grad():
            data["pred"] = self.inferer(data["moving_image"][None], self.network, data["fixed_image"][None])[0]
        return self.postprocessing(data)
