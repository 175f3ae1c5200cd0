"""Segmentation training examples synthesised from real label maps (SynthSeg's recipe, written
from Billot et al., Medical Image Analysis 2023).

Every item is a new 3D patch: a label map drawn from the 20 real whole heads, deformed (random
affine and smooth non-linear displacement), imaged with a random contrast (`synth.labels`),
optionally skull-stripped, acquired at a random resolution and slice thickness, with noise; its
target is the tissue class (CSF, grey matter, white matter) of the deformed 1 mm labels. The
network therefore never sees the same contrast, shape or resolution twice, which is what lets it
segment real scans of any contrast and quality (reconstructions included).

Label maps are read once, reoriented to RAS (the orientation inference feeds the network) and
cropped to the head. Items are seeded as in `synth.dataset`: a fresh example per draw for
training, the same example per index for validation.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from mribundles.errors import InvalidInputError
from mribundles.synth.dataset import SEED_STRIDE
from mribundles.synth.labels import load_label_map, require_contrasts, skull_strip, synthesize_image, tissue_labels
from mribundles.synth.spatial import random_matrix, sample, smooth_displacement, uniform, warp_grid

__all__ = ["CONTRAST_MIX", "LabelHead", "SyntheticSegmentationDataset", "degrade_resolution", "simulate_scan"]

# Contrasts drawn per example (uniformly from this list, so repeats weigh): T1-like most often
# (the bundle's main input), the rest split between the other presets and fully random
# intensities, as SynthSeg mixes them.
CONTRAST_MIX = ("t1", "t1", "t2", "pd", "random", "random")


def degrade_resolution(image: torch.Tensor, spacing: Sequence[float]) -> torch.Tensor:
    """``image`` (D, H, W at 1 mm) as if acquired with voxels of ``spacing`` mm and resampled
    back to 1 mm: a Gaussian slice profile (FWHM = voxel size) along each coarse axis, sampling at
    the coarse grid, linear interpolation back. Axes with spacing <= 1 are left alone."""
    from monai.networks.layers import GaussianFilter

    coarse = [max(float(s), 1.0) for s in spacing]
    if max(coarse) <= 1.0:
        return image
    sigmas = [0.0 if s <= 1.0 else s / 2.355 for s in coarse]
    # Edge-replicate first: the filter pads with zeros, which would darken the borders.
    margin = [int(3 * s) + 1 for s in sigmas]
    padded = F.pad(image[None, None], [m for m in reversed(margin) for _ in range(2)], mode="replicate")
    blurred = GaussianFilter(3, [max(s, 1e-3) for s in sigmas]).to(image.device)(padded)
    blurred = blurred[..., margin[0] : margin[0] + image.shape[0], margin[1] : margin[1] + image.shape[1], margin[2] : margin[2] + image.shape[2]]
    low = F.interpolate(blurred, size=[max(2, round(n / s)) for n, s in zip(image.shape, coarse)], mode="trilinear", align_corners=True)
    return F.interpolate(low, size=tuple(image.shape), mode="trilinear", align_corners=True)[0, 0]


def simulate_scan(
    labels: torch.Tensor,
    generator: torch.Generator,
    contrasts: Sequence[str],
    stripped: bool,
    thick_slice_prob: float,
    max_slice_mm: float,
    max_noise: float,
) -> torch.Tensor:
    """A random scan of deformed 1 mm FreeSurfer ``labels`` (D, H, W): a contrast drawn from
    ``contrasts`` (`synthesize_image`), a random in-plane resolution and, in ``thick_slice_prob``
    of the draws, thick slices along one axis (`degrade_resolution`), then rectified noise.
    ``stripped``: the labels are skull-stripped already, so the background stays exactly zero.
    Every draw comes from ``generator``, in a fixed order, so one seed gives one scan."""
    contrast = contrasts[int(torch.randint(len(contrasts), (), generator=generator))]
    background = "zero" if stripped or uniform(generator, 0, 1) < 0.5 else "random"
    image = synthesize_image(labels, generator, contrast=contrast, background=background)

    voxel = [uniform(generator, 1.0, 1.6) for _ in range(3)]  # clinical in-plane resolutions
    if uniform(generator, 0, 1) < thick_slice_prob:
        voxel[int(torch.randint(3, (), generator=generator))] = uniform(generator, 2.0, max_slice_mm)
    image = degrade_resolution(image, voxel)
    noise = max_noise * float(torch.rand((), generator=generator)) * torch.randn(image.shape, generator=generator)
    image = (image + noise).abs()  # magnitude images: noise is rectified
    if stripped:  # skull-stripped scans have an exactly zero background
        image = torch.where(labels > 0, image, torch.zeros_like(image))
    return image


class LabelHead:
    """One label map: int16 labels in RAS, cropped to the head, and where its brain is."""

    def __init__(self, path: Path):
        import nibabel as nib

        labels, affine = load_label_map(path)
        ornt = nib.orientations.io_orientation(affine)  # stored axes -> RAS
        array = nib.orientations.apply_orientation(labels.numpy(), ornt)
        nonzero = np.nonzero(array)
        box = tuple(slice(int(a.min()), int(a.max()) + 1) for a in nonzero)
        self.labels = torch.from_numpy(np.ascontiguousarray(array[box]))
        self.spacing = tuple(float(v) for v in nib.affines.voxel_sizes(affine)[np.argsort(ornt[:, 0])])
        brain = torch.nonzero(tissue_labels(self.labels) > 0)
        self.brain_voxels = brain[:: max(1, len(brain) // 20000)]  # patch centres: a sparse subset
        self.path = path


class SyntheticSegmentationDataset(Dataset):
    """``length`` random (image, tissue label) patches per epoch, synthesised from label maps.

    Args:
        label_maps: a folder of whole-head label maps (every ``*.nii*`` in it, as
            ``labels/synthseg/``) or a list of label-map files.
        length: items per epoch.
        patch_size: output patch (voxels at 1 mm).
        seed: base seed.
        fresh: a new example per draw (training) or a fixed example per index (validation).
        include / exclude: file names (or stems) of the maps to use or leave out; validation
            subjects are excluded from training and included alone in validation.
        skull_strip_prob: share of examples with every extra-cerebral label set to background
            (zero intensity), as in skull-stripped scans.
        thick_slice_prob: share of examples acquired with thick slices along one random axis.
        max_slice_mm: largest slice thickness drawn.
        max_noise: largest noise standard deviation (image in [0, 1]).
        contrasts: the contrasts drawn from, uniformly ("t1", "t2", "pd", "random"; repeat
            one to draw it more often).
        transform: applied to every item (the bundle's intensity normalisation).

    Items: ``{"image": float32 (1, *patch), "label": uint8 (1, *patch)}``, labels 0 background,
    1 CSF, 2 grey matter, 3 white matter (`synth.labels.tissue_labels`). The image is not yet
    normalised: the bundle's own intensity transforms do that, as in inference.
    """

    def __init__(
        self,
        label_maps: str | os.PathLike | Sequence[str | os.PathLike],
        length: int,
        patch_size: Sequence[int] = (64, 64, 64),
        seed: int = 0,
        fresh: bool = True,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        skull_strip_prob: float = 0.5,
        thick_slice_prob: float = 0.4,
        max_slice_mm: float = 6.0,
        max_noise: float = 0.05,
        contrasts: Sequence[str] = CONTRAST_MIX,
        transform: Callable[[dict], dict] | None = None,
    ):
        def stem(path: Path) -> str:
            return path.name.split(".")[0]

        if isinstance(label_maps, (str, os.PathLike)):
            folder = Path(label_maps)
            paths = sorted(folder.glob("*.nii*")) if folder.is_dir() else [folder]
        else:
            folder, paths = None, [Path(p) for p in label_maps]
        keep = [p for p in paths if (not include or stem(p) in include or p.name in include)
                and stem(p) not in exclude and p.name not in exclude]
        if not keep:
            raise InvalidInputError("no label maps to draw from (check include/exclude)", folder or "label_maps")
        self.paths = keep
        self.heads: list[LabelHead | None] = [None] * len(keep)
        self.length, self.patch_size, self.seed, self.fresh = int(length), tuple(int(p) for p in patch_size), int(seed), fresh
        self.skull_strip_prob, self.thick_slice_prob = skull_strip_prob, thick_slice_prob
        self.max_slice_mm, self.max_noise = max_slice_mm, max_noise
        self.contrasts = require_contrasts(contrasts)
        self.transform = transform
        self.draws: dict[int, int] = {}

    def __len__(self) -> int:
        return self.length

    def _head(self, index: int) -> LabelHead:
        if self.heads[index] is None:
            self.heads[index] = LabelHead(self.paths[index])
        return self.heads[index]

    def _generator(self, index: int) -> torch.Generator:
        """The generator of this draw of ``index``: seed (seed, index + n * length) for the n-th
        draw in training, (seed, index) every time in validation (`synth.dataset`'s scheme)."""
        count = self.draws.get(index, 0) if self.fresh else 0
        self.draws[index] = count + 1
        return torch.Generator().manual_seed(self.seed * SEED_STRIDE + index + count * self.length)

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        generator = self._generator(index)

        head = self._head(int(torch.randint(len(self.paths), (), generator=generator)))
        centre = head.brain_voxels[int(torch.randint(len(head.brain_voxels), (), generator=generator))].float()
        shape = torch.tensor(head.labels.shape, dtype=torch.float32)
        spacing = torch.tensor(head.spacing)
        translation = (centre - (shape - 1) / 2) * spacing
        matrix = random_matrix(3, generator, max_rotation_deg=15.0, scale_range=(0.85, 1.15), max_shear=0.05, flip=False)
        if uniform(generator, 0, 1) < 0.5:  # left-right mirror: the only flip a RAS-oriented scan shows
            matrix = matrix @ torch.diag(torch.tensor([-1.0, 1.0, 1.0]))
        grid = warp_grid(self.patch_size, (1.0, 1.0, 1.0), head.labels.shape, head.spacing, matrix, translation,
                         smooth_displacement(self.patch_size, generator, max_std_mm=3.0))
        labels = sample(head.labels, grid, mode="nearest")

        stripped = uniform(generator, 0, 1) < self.skull_strip_prob
        if stripped:
            labels = skull_strip(labels)
        image = simulate_scan(labels, generator, self.contrasts, stripped, self.thick_slice_prob, self.max_slice_mm, self.max_noise)
        item = {"image": image[None].float(), "label": tissue_labels(labels)[None]}
        return self.transform(item) if self.transform is not None else item
