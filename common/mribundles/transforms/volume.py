"""Loading 3D volumes (and label maps) for the analysis bundles, with the checks a user needs.

`LoadVolumed` reads through `mribundles.io.read_image` (NIfTI, NRRD, MHA, DICOM), so a missing,
corrupt or NaN file is an InvalidInputError naming it, and refuses what a 3D network cannot
take: a 2D image, a 4D series, an empty label map. The result is a channel-first `MetaTensor`
carrying the affine, which MONAI's spatial transforms (Orientationd, Spacingd) and their
inverses use to keep every output on the input's grid. `SynthesizeHeadd` stands in for it where a
training draws whole heads synthesised from label maps (`synth.heads`) instead of real scans.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from mribundles.errors import InvalidInputError
from mribundles.io.images import read_image
from mribundles.synth.heads import synthesize_head
from mribundles.synth.segmentation import LabelHead

__all__ = ["LoadVolumed", "SynthesizeHeadd", "ZeroBackgroundd"]


class LoadVolumed(MapTransform):
    """Replace each key's path by a (1, x, y, z) float32 MetaTensor with its affine.

    Args:
        keys: keys holding file paths.
        label_keys: those of ``keys`` that are label maps: integer-valued, not empty.
        min_size: smallest extent accepted along each axis (a 2D image saved as a one-slice
            volume is refused rather than segmented as if it were 3D).
    """

    def __init__(self, keys: KeysCollection, label_keys: KeysCollection = (), min_size: int = 8, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.label_keys = set([label_keys] if isinstance(label_keys, str) else label_keys)
        self.min_size = min_size

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            path = str(d[key])
            image, affine = read_image(path)
            _check_volume(image.shape, self.min_size, path)
            if key in self.label_keys:
                _check_labels(image, path)
            d[key] = MetaTensor(image.unsqueeze(0), affine=torch.as_tensor(affine), meta={"filename_or_obj": path})
        return d


class SynthesizeHeadd(MapTransform):
    """Replace each key's label-map path by a synthetic whole head imaged from it: a (1, x, y, z)
    float32 MetaTensor in [0, 1], RAS axes, isotropic voxels (`synth.heads.synthesize_head`).

    The head is drawn with the seed in the data's ``seed_key`` entry, so a datalist of (map,
    seed) pairs is deterministic and a ``CacheDataset``/``SmartCacheDataset`` caches it like a
    loaded scan. Each label map is read once.

    Args:
        keys: keys holding label-map paths (``labels/synthseg/training_seg_*.nii.gz``).
        seed_key: the data entry holding the head's seed.
        spacing: voxel size in mm (the bundle's high-resolution spacing).
        contrasts, skull_strip_prob: as `synthesize_head`.
    """

    def __init__(self, keys: KeysCollection, seed_key: str = "seed", spacing: float = 1.0, contrasts: Sequence[str] = ("t1",),
                 skull_strip_prob: float = 0.5, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.seed_key, self.spacing = seed_key, float(spacing)
        self.contrasts, self.skull_strip_prob = tuple(contrasts), float(skull_strip_prob)
        self.heads: dict[str, LabelHead] = {}

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            path = str(d[key])
            if path not in self.heads:
                self.heads[path] = LabelHead(Path(path))
            seed = int(d[self.seed_key])
            image = synthesize_head(self.heads[path], seed, self.spacing, self.contrasts, self.skull_strip_prob)
            affine = torch.diag(torch.tensor([self.spacing, self.spacing, self.spacing, 1.0], dtype=torch.float64))
            name = f"{path} (synthesised head, seed {seed})"
            d[key] = MetaTensor(image[None], affine=affine, meta={"filename_or_obj": name})
        return d


def _check_volume(shape: Sequence[int], min_size: int, path: str) -> None:
    if len(shape) != 3:
        raise InvalidInputError(f"expected a 3D volume (x, y, z), got shape {tuple(shape)}", path)
    if min(shape) < min_size:
        raise InvalidInputError(f"expected a 3D volume, got shape {tuple(shape)} (fewer than {min_size} voxels along an axis)", path)


def _check_labels(labels: torch.Tensor, path: str) -> None:
    if not bool((labels > 0).any()):
        raise InvalidInputError("label map is empty (no voxel above 0)", path)
    if not torch.equal(labels, labels.round()):
        raise InvalidInputError("label map has non-integer values", path)


def is_foreground(image: torch.Tensor) -> torch.Tensor:
    """Where an image prepared by `ZeroBackgroundd` (and z-scored over its non-zero voxels) has
    tissue: every voxel it did not zero. The ``select_fn`` that makes ``MaskIntensityd`` clear
    labels predicted in the background, where nothing was imaged."""
    return image != 0


class ZeroBackgroundd(MapTransform):
    """Set voxels darker than ``fraction`` of the image's 99th percentile to exactly zero.

    Skull-stripped training volumes have an exactly zero background; a reconstructed or scanned
    volume has noise there. Zeroing it makes ``NormalizeIntensityd(nonzero=True)`` compute its
    statistics over the head, as in training, instead of over head plus noise. Runs on the
    tensor's device.
    """

    def __init__(self, keys: KeysCollection, fraction: float = 0.05, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.fraction = fraction

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            flat = image.reshape(-1).float()
            # quantile() refuses more than 2**24 elements; a strided subsample estimates it as well.
            level = torch.quantile(flat[:: max(1, flat.numel() // 2**24 + 1)], 0.99) * self.fraction
            d[key] = torch.where(image < level, torch.zeros_like(image), image)
        return d
