"""Where the training anatomy comes from: slices of real image volumes, in all three
orientations, and images synthesised from real whole-head label maps.

`AnatomyBank` lists the sources in a data folder laid out as ``../shared/data`` is (see its
README): ``volumes/`` (MNI152 template, voxelmorph subject, pyradiomics patients, ANTsPy 2D
slices) and ``labels/synthseg/training_seg_*.nii.gz`` (20 whole-head label maps). Files are read
when first drawn and kept in memory. Files named in ``exclude`` never enter: the simulated
benchmark's validation patient, and any test scan.

Every draw returns a 2D magnitude image in [0, 1], its pixel spacing in mm and a line naming
its source, so that an example can be traced to the real data it came from.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mribundles.errors import InvalidInputError
from mribundles.synth.labels import CONTRASTS, load_label_map, synthesize_image

__all__ = ["AnatomyBank", "AnatomySlice", "DEFAULT_EXCLUDE"]

# The validation subjects of scripts/make_recon_dataset.py: the simulated benchmark scores on them.
DEFAULT_EXCLUDE = ("pyradiomics/brain2_image.nrrd", "antspy_slices/r85slice.jpg")
_CONTRAST_CHOICES = ("random", *CONTRASTS)
_MIN_FOREGROUND = 0.08  # a slice must be at least this much object to be drawn


@dataclass
class AnatomySlice:
    image: torch.Tensor  # float32 (H, W) in [0, 1]
    spacing: tuple[float, float]  # mm per pixel along (H, W)
    source: str


@dataclass
class _Volume:
    path: Path
    kind: str  # "image" or "labels"
    data: torch.Tensor | None = None  # float32 image in [0, 1], or int16 labels
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)


class AnatomyBank:
    """The real volumes and label maps under ``data_root``, drawn slice by slice.

    Args:
        data_root: folder with ``volumes/`` and/or ``labels/synthseg/`` (the shared data layout).
        label_fraction: probability that a draw is a label-map synthesis rather than a real slice.
        exclude: paths relative to ``volumes/`` (or file names) that never enter.
    """

    def __init__(self, data_root: str | os.PathLike, label_fraction: float = 0.5, exclude: Sequence[str] = DEFAULT_EXCLUDE):
        root = Path(data_root)
        if not root.is_dir():
            raise InvalidInputError("training data folder not found", root)
        volumes = root / "volumes"
        excluded = {str(e) for e in exclude}

        def kept(path: Path) -> bool:
            rel = str(path.relative_to(volumes)) if volumes in path.parents else path.name
            return rel not in excluded and path.name not in excluded

        images = sorted(volumes.glob("mni152*/*t1*.nii*")) + sorted(volumes.glob("voxelmorph/test_scan.npz"))
        images += sorted(volumes.glob("pyradiomics/*_image.nrrd")) + sorted(volumes.glob("antspy_slices/*.jpg"))
        self.images = [_Volume(p, "image") for p in images if kept(p)]
        self.label_maps = [_Volume(p, "labels") for p in sorted((root / "labels" / "synthseg").glob("*.nii*")) if kept(p)]
        if not self.images and not self.label_maps:
            raise InvalidInputError("no real volumes or label maps found (expected volumes/ and labels/synthseg/)", root)
        self.label_fraction = label_fraction if self.images and self.label_maps else float(bool(self.label_maps))
        # Real images are small: read them now, and draw each in proportion to its planes, so that
        # every real slice is as likely as any other (a 2D photo slice counts once).
        for volume in self.images:
            _load(volume)
        self._image_weights = torch.tensor([float(sum(_planes(v.data))) for v in self.images])

    def sources(self) -> list[str]:
        """Every file that can be drawn."""
        return [str(v.path) for v in self.images + self.label_maps]

    def draw(self, generator: torch.Generator) -> AnatomySlice:
        """One slice: a real one, or one synthesised from a label map with a random contrast."""
        use_labels = float(torch.rand((), generator=generator)) < self.label_fraction
        if use_labels:
            volume = self.label_maps[int(torch.randint(len(self.label_maps), (), generator=generator))]
        else:
            volume = self.images[int(torch.multinomial(self._image_weights, 1, generator=generator))]
        _load(volume)
        axis, index, plane = _draw_plane(volume.data, generator)
        spacing = tuple(s for i, s in enumerate(volume.spacing) if i != axis)
        where = f"{volume.path.name} axis {axis} slice {index}"
        if volume.kind == "image":
            return AnatomySlice(plane, spacing, f"real image {where}")
        contrast = _CONTRAST_CHOICES[int(torch.randint(len(_CONTRAST_CHOICES), (), generator=generator))]
        image = synthesize_image(plane, generator, contrast=contrast)
        return AnatomySlice(image, spacing, f"synthesised ({contrast}) from label map {where}")


def _draw_plane(data: torch.Tensor, generator: torch.Generator) -> tuple[int, int, torch.Tensor]:
    """A random orientation and a random plane with enough object in it (a 2D image, stored
    as (H, W, 1), has one plane)."""
    axes = [a for a in range(3) if data.shape[a] == 1] or [0, 1, 2]
    axis = axes[int(torch.randint(len(axes), (), generator=generator))]
    foreground = (data != 0).float().mean(dim=tuple(a for a in range(3) if a != axis))
    candidates = torch.nonzero(foreground >= min(_MIN_FOREGROUND, float(foreground.max()) * 0.5)).flatten()
    index = int(candidates[int(torch.randint(len(candidates), (), generator=generator))])
    return axis, index, data.select(axis, index).contiguous()


def _planes(data: torch.Tensor) -> list[int]:
    """Planes per orientation: one for a 2D image, else the size of each axis."""
    return [1] if 1 in data.shape else list(data.shape)


def _load(volume: _Volume) -> None:
    """Read a volume once: images scaled to [0, 1] by their 99.5th percentile, labels as int16."""
    if volume.data is not None:
        return
    path = volume.path
    if volume.kind == "labels":
        labels, affine = load_label_map(path)
        volume.data, volume.spacing = labels, _spacing(affine)
        return
    name = path.name.lower()
    if name.endswith(".npz"):
        with np.load(path) as npz:
            array, spacing = np.asarray(npz["vol"], dtype=np.float32), (1.0, 1.0, 1.0)
    elif name.endswith(".jpg"):
        from PIL import Image

        array, spacing = np.asarray(Image.open(path).convert("F"), dtype=np.float32)[..., None], (1.0, 1.0, 1.0)
    else:
        from mribundles.io.images import read_image

        tensor, affine = read_image(path)
        array, spacing = tensor.numpy().astype(np.float32), _spacing(affine)
    array = np.clip(array / max(float(np.percentile(array, 99.5)), 1e-6), 0.0, 1.0)
    volume.data, volume.spacing = torch.from_numpy(np.ascontiguousarray(array)), spacing


def _spacing(affine: np.ndarray) -> tuple[float, float, float]:
    from nibabel.affines import voxel_sizes

    return tuple(float(v) for v in voxel_sizes(affine))
