"""The stages a chain composes, each built from a stage bundle's own configs and weights.

A stage is loaded by reference: the chain names a bundle (its metadata ``name``, found like
`bundle_root`, or a folder) and the stage parses that bundle's ``inference.json``, loads its
weights with ``weights_only=True`` and keeps only what it needs to run in memory. Nothing of
a stage bundle is copied into the chain's configs, so a retrained or re-published stage bundle
is picked up as it is.

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
from monai.transforms import Compose

from mribundles.bundles import bundle_root, load_inference, read_metadata
from mribundles.report import progress

__all__ = ["ReconStage", "RegStage", "SegStage", "SuperResStage", "batch_size_for", "find_bundle", "optional_stage"]


def find_bundle(bundle: str | os.PathLike) -> Path:
    """A bundle folder from a folder path or a bundle name."""
    path = Path(bundle)
    if (path / "configs" / "metadata.json").is_file():
        return path.resolve()
    return Path(bundle_root(str(bundle)))


def optional_stage(stage: type, bundle: str | os.PathLike | None, *args):
    """``stage(bundle, *args)``, or None when the stage is switched off: ``bundle`` None, empty,
    ``"none"`` or ``"null"``. MONAI's command line drops a ``None`` override and passes
    ``null`` as a string, so ``--sr_bundle none`` is how a user switches a stage off there."""
    return None if switched_off(bundle) else stage(bundle, *args)


def switched_off(value) -> bool:
    """None, empty, ``"none"`` or ``"null"``: how a config or the command line leaves an
    optional setting unset (MONAI's CLI drops a ``None`` override and passes ``null`` as a string)."""
    return value is None or str(value).strip().lower() in ("", "none", "null")


def _open_bundle(stage, overrides: dict | None = None):
    """Set ``stage.device`` (a torch.device; the command line gives a string), ``root``,
    ``metadata`` and ``network`` (the bundle's weights, loaded with weights_only) from
    ``stage.bundle``; return the bundle's parsed inference config."""
    stage.device = torch.device(stage.device)
    stage.root = find_bundle(stage.bundle)
    stage.metadata = read_metadata(stage.root)
    parser, stage.network = load_inference(stage.root, {"device": stage.device, **(overrides or {})}, stage.device)
    return parser


def _without(transforms, *kinds) -> Compose:
    """A Compose of a bundle's own transform objects, minus those of ``kinds`` (file loaders and
    writers: a stage reads and writes memory). The objects are the bundle's, so an ``Invertd``
    of that bundle still recognises the operations they record."""
    return Compose([t for t in transforms if not isinstance(t, kinds)])


def _fresh(volume: MetaTensor, source: str) -> MetaTensor:
    """The volume with its affine and name only: the next stage starts a trace of its own."""
    return MetaTensor(volume.as_tensor(), affine=volume.affine, meta={"filename_or_obj": source})


@dataclass
class ReconStage:
    """Reconstruction of every slice of a multi-slice k-space file, in batches, on ``device``.

    The bundle's preprocessing (load, undersample with ``mask``/``acceleration``/``seed``,
    zero-fill) runs per slice on the host, as in the bundle itself; the network's outputs stay
    on ``device`` and are assembled into one volume.

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
        from mribundles.evaluation import load_recon_bundle

        self.device = torch.device(self.device)  # "--device cuda" on the command line is a string
        self.root = find_bundle(self.bundle)
        self.metadata = read_metadata(self.root)
        # Chains read Cartesian multi-slice k-space: a bundle that takes both samplings is told so.
        overrides = {"sampling": "cartesian", "mask": self.mask, "acceleration": self.acceleration,
                     "center_fraction": self.center_fraction, "seed": self.seed, "device": self.device}
        if switched_off(self.weights):
            self.weights = None
        else:
            overrides["ckpt_path"] = str(self.weights)
        self.preprocessing, self.prepare_batch, self.network, _ = load_recon_bundle(self.root, overrides, self.device)

    def __call__(self, kspace_file: str | os.PathLike, affine: torch.Tensor) -> MetaTensor:
        """(1, x, y, z) MetaTensor on the device: x along k-space columns, y along rows, z slices."""
        from monai.data import DataLoader, Dataset

        from mribundles.data import kspace_slices

        dataset = Dataset(kspace_slices(kspace_file), self.preprocessing)
        batch_size = self._batch_size(dataset)
        batches = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
        slices = [self._reconstruct(batch) for batch in progress(batches, "batch", desc="reconstruction")]
        volume = torch.cat(slices).permute(2, 1, 0)  # (slice, ky, kx) -> (kx, ky, slice)
        return MetaTensor(volume[None], affine=affine, meta={"filename_or_obj": str(kspace_file)})

    def lineage(self, kspace_file: str | os.PathLike) -> dict:
        """MLflow params of a run: the bundle, the weights that ran (their own sha256 when
        ``weights`` replaced the bundle's), the input and the undersampling."""
        from mribundles.bundles import file_sha256
        from mribundles.tracking import bundle_params

        params = {**bundle_params(self.root), "kspace_file": str(kspace_file), "mask": self.mask,
                  "acceleration": self.acceleration, "center_fraction": self.center_fraction, "seed": self.seed}
        if self.weights is not None:
            params.update(weights=str(self.weights), weights_sha256=file_sha256(self.weights))
        return params

    def _reconstruct(self, batch: dict) -> torch.Tensor:
        """A collated batch of slices -> (B, ky, kx) magnitude images on the device."""
        with torch.no_grad():
            inputs, _, args, kwargs = self.prepare_batch(batch, self.device)
            image = torch.as_tensor(self.network(inputs, *args, **kwargs)).float()  # (B, 1, ky, kx)
        if "scale" in batch:  # NormalizeKspaced in the preprocessing: undo it
            image = image * torch.as_tensor(batch["scale"], device=image.device).reshape(-1, 1, 1, 1).float()
        return image[:, 0]

    def _batch_size(self, dataset) -> int:
        if self.batch_size != "auto":
            return int(self.batch_size)
        if self.device.type != "cuda":
            return 4
        from monai.data import list_data_collate

        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        baseline = torch.cuda.memory_allocated(self.device)
        self._reconstruct(list_data_collate([dataset[0]]))
        peak = torch.cuda.max_memory_allocated(self.device) - baseline
        free, _ = torch.cuda.mem_get_info(self.device)
        return batch_size_for(free, peak)


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
        from monai.transforms import SaveImaged

        from mribundles.transforms import LoadVolumed

        parser = _open_bundle(self)
        self.preprocessing = _without(parser.get_parsed_content("preprocessing").transforms, LoadVolumed)
        self.postprocessing = _without(parser.get_parsed_content("postprocessing").transforms, SaveImaged)
        self.inferer = parser.get_parsed_content("inferer")
        self.class_names = parser.get_parsed_content("class_names")

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
    (minus its file loader, no simulated degradation), network and postprocessing (minus its
    writer): the volume on the finer grid that its affine implies, in its own orientation."""

    bundle: str | os.PathLike
    device: torch.device
    root: Path = field(init=False)
    metadata: dict = field(init=False)

    def __post_init__(self) -> None:
        from monai.transforms import SaveImaged

        from mribundles.transforms import LoadVolumed

        parser = _open_bundle(self, {"degradation": "none"})
        self.preprocessing = _without(parser.get_parsed_content("preprocessing").transforms, LoadVolumed)
        self.postprocessing = _without(parser.get_parsed_content("postprocessing").transforms, SaveImaged)

    def __call__(self, volume: MetaTensor) -> MetaTensor:
        """(1, x, y, z) -> (1, fx*x, fy*y, fz*z) MetaTensor on the device, with the finer affine."""
        data = self.preprocessing({"image": volume})
        image = data["image"]
        with torch.no_grad():
            pred = self.network(image.as_tensor()[None])[0]
        data["pred"] = MetaTensor(pred, meta=dict(image.meta), applied_operations=list(image.applied_operations))
        return _fresh(self.postprocessing(data)["sr"], str(volume.meta.get("filename_or_obj", "volume")))


@dataclass
class RegStage:
    """Registration of an in-memory volume (and its labels) to a template file with a
    registration bundle's preprocessing, network and warps (minus its loader and writers).

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
        from monai.transforms import SaveImaged

        from mribundles.transforms import LoadVolumed, NamePaird

        parser = _open_bundle(self)
        self.fixed_file = self.fixed_file or parser.get_parsed_content("fixed_file")
        self.fixed_label_file = self.fixed_label_file or parser.get_parsed_content("fixed_label_file")
        steps = parser.get_parsed_content("preprocessing").transforms
        self.load = next(t for t in steps if isinstance(t, LoadVolumed))
        self.preprocessing = _without(steps, LoadVolumed)
        self.postprocessing = _without(parser.get_parsed_content("postprocessing").transforms, SaveImaged, NamePaird)
        self.class_names = parser.get_parsed_content("class_names")

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
            data["pred"] = self.network(data["moving_image"][None], data["fixed_image"][None])[0]
        return self.postprocessing(data)
