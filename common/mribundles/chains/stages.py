"""The stages a chain composes, each built from a stage bundle's own configs and weights.

A stage is loaded by reference: the chain names a bundle (its metadata ``name``, found like
`bundle_root`, or a folder) and the stage parses that bundle's ``inference.json``, loads its
weights with ``weights_only=True`` and keeps only what it needs to run in memory. Nothing of
a stage bundle is copied into the chain's configs, so a retrained or re-published stage bundle
is picked up as it is.

Between stages the data is a `MetaTensor` on the chain's device: the reconstruction stage returns
the volume (1, x, y, z) with its affine, and the segmentation stage takes it from there. Only
the chain's inputs are read from files and only its final outputs are written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from monai.data import MetaTensor

from mribundles.bundles import bundle_root, load_inference, read_metadata

__all__ = ["ReconStage", "SegStage", "batch_size_for", "find_bundle"]


def find_bundle(bundle: str | os.PathLike) -> Path:
    """A bundle folder from a folder path or a bundle name."""
    path = Path(bundle)
    if (path / "configs" / "metadata.json").is_file():
        return path.resolve()
    return Path(bundle_root(str(bundle)))


@dataclass
class ReconStage:
    """Reconstruction of every slice of a multi-slice k-space file, in batches, on ``device``.

    The bundle's preprocessing (load, undersample with ``mask``/``acceleration``/``seed``,
    zero-fill) runs per slice on the host, as in the bundle itself; the network's outputs stay
    on ``device`` and are assembled into one volume.

    ``batch_size="auto"`` sizes batches to the device: on a GPU, one slice is run alone to
    measure its peak memory and batches take half of the free memory (`batch_size_for`); on the
    CPU, where memory rarely binds and larger batches do not run faster, 4.
    """

    bundle: str | os.PathLike
    device: torch.device
    mask: str = "random1d"
    acceleration: float = 4
    center_fraction: float = 0.08
    seed: int = 0
    batch_size: int | str = "auto"
    root: Path = field(init=False)
    metadata: dict = field(init=False)

    def __post_init__(self) -> None:
        from mribundles.evaluation import load_recon_bundle

        self.device = torch.device(self.device)  # "--device cuda" on the command line is a string
        self.root = find_bundle(self.bundle)
        self.metadata = read_metadata(self.root)
        overrides = {"mask": self.mask, "acceleration": self.acceleration, "center_fraction": self.center_fraction,
                     "seed": self.seed, "device": self.device}
        self.preprocessing, self.prepare_batch, self.network, _ = load_recon_bundle(self.root, overrides, self.device)

    def __call__(self, kspace_file: str | os.PathLike, affine: torch.Tensor) -> MetaTensor:
        """(1, x, y, z) MetaTensor on the device: x along k-space columns, y along rows, z slices."""
        from monai.data import DataLoader, Dataset

        from mribundles.data import kspace_slices

        dataset = Dataset(kspace_slices(kspace_file), self.preprocessing)
        batch_size = self._batch_size(dataset)
        slices = [self._reconstruct(batch) for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)]
        volume = torch.cat(slices).permute(2, 1, 0)  # (slice, ky, kx) -> (kx, ky, slice)
        return MetaTensor(volume[None], affine=affine, meta={"filename_or_obj": str(kspace_file)})

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
    file loader), inferer and network; labels are mapped back onto the input volume's grid."""

    bundle: str | os.PathLike
    device: torch.device
    root: Path = field(init=False)
    metadata: dict = field(init=False)

    def __post_init__(self) -> None:
        from monai.transforms import Compose

        from mribundles.transforms import LoadVolumed

        self.device = torch.device(self.device)  # "--device cuda" on the command line is a string
        self.root = find_bundle(self.bundle)
        self.metadata = read_metadata(self.root)
        parser, self.network = load_inference(self.root, {"device": self.device}, self.device)
        transforms = parser.get_parsed_content("preprocessing").transforms
        self.preprocessing = Compose([t for t in transforms if not isinstance(t, LoadVolumed)])
        self.inferer = parser.get_parsed_content("inferer")
        self.class_names = parser.get_parsed_content("class_names")

    def __call__(self, volume: MetaTensor) -> tuple[MetaTensor, MetaTensor]:
        """(labels on the input grid, (image, labels) on the network's grid for figures)."""
        from monai.transforms import Invertd

        data = self.preprocessing({"image": volume})
        with torch.no_grad():
            logits = self.inferer(data["image"][None], self.network)[0]
        labels = logits.argmax(0, keepdim=True).to(torch.uint8)
        net_grid = (data["image"], labels)
        data["pred"] = MetaTensor(labels.float(), affine=data["image"].affine, meta=dict(data["image"].meta))
        data["pred"].applied_operations = list(data["image"].applied_operations)
        inverted = Invertd("pred", self.preprocessing, orig_keys="image", nearest_interp=True, to_tensor=True)(data)["pred"]
        return inverted.to(torch.uint8), net_grid
