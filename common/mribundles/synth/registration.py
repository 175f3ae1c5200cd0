"""Registration training pairs synthesised from real label maps (SynthMorph's recipe, written
from Hoffmann et al., IEEE Transactions on Medical Imaging 2022).

Every item is a new pair: a fixed and a moving volume drawn from two different label maps of
the 20 real whole heads (or, in a share of the draws, one map deformed twice), each deformed by
its own random diffeomorphism and small affine map, and each imaged with its own random
contrast, resolution and noise (`synth.segmentation.simulate_scan`). The network learns from
the tissue labels (Dice) and never from the intensities, so the two sides may look nothing
alike: that is what makes the registration contrast-agnostic.

The bundle registers volumes after an affine step (`registration.affine_align`). So that pairs
of different heads differ as much as two affinely aligned brains do, every head is placed once
in the frame of a reference head (the first map) by that same affine step, fitted on T1-like
renderings of the two brains. Items are seeded as in `synth.segmentation`: a fresh pair per draw
for training, the same pair per index for validation.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from mribundles.registration import affine_align, random_diffeomorphism
from mribundles.synth.labels import CONTRASTS, skull_strip, tissue_labels
from mribundles.synth.segmentation import CONTRAST_MIX, LabelHead, SyntheticSegmentationDataset, simulate_scan
from mribundles.synth.spatial import random_matrix, sample, uniform, warp_grid

__all__ = ["SyntheticPairDataset"]

# The grid on which heads are aligned: 2 mm voxels over 176 x 208 x 176 mm about the brain's
# centre, a whole brain. Its sides divide by 4, so `affine_align` runs at 8 and 4 mm, as at
# inference.
_ALIGN_SHAPE = (88, 104, 88)
_ALIGN_SPACING = (2.0, 2.0, 2.0)
_ALIGN_POOLING = (4, 2)


@dataclass(frozen=True)
class _Placement:
    """Where one head lies in the common frame: a point ``r`` of the reference frame (mm about
    the reference brain's centre) is at ``offset + matrix @ r`` in the head (mm about its label
    array's centre, array axes). ``low``/``high`` bound its brain (mm, head frame)."""

    matrix: torch.Tensor
    offset: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor


def _brain_points(head: LabelHead) -> torch.Tensor:
    """(N, 3) mm positions, about the label array's centre, of the head's sampled brain voxels."""
    shape = torch.tensor(head.labels.shape, dtype=torch.float32)
    return (head.brain_voxels.float() - (shape - 1) / 2) * torch.tensor(head.spacing)


def _render_brain(head: LabelHead, centre: torch.Tensor) -> torch.Tensor:
    """(1, 1, *_ALIGN_SHAPE) skull-stripped T1-like image of the head's brain about ``centre``
    (mm): CSF, grey and white matter at the T1 preset's class means, everything else zero, which
    is what the affine step sees at inference."""
    grid = warp_grid(_ALIGN_SHAPE, _ALIGN_SPACING, head.labels.shape, head.spacing, torch.eye(3), centre)
    means = torch.tensor((0.0, *CONTRASTS["t1"]))
    return means[tissue_labels(sample(head.labels, grid, mode="nearest")).long()][None, None]


def _theta_to_mm(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`affine_align`'s (3, 4) map in grid_sample coordinates of the alignment grid -> the
    (3, 3) matrix and (3,) offset of the same map in mm, array axes."""
    half = torch.diag(torch.tensor([n * s / 2 for n, s in zip(_ALIGN_SHAPE, _ALIGN_SPACING)]))
    flip = torch.eye(3).flip(0)  # grid_sample's (x, y, z) are the array axes reversed
    matrix = half @ flip @ theta[:, :3] @ flip @ torch.linalg.inv(half)
    return matrix, half @ flip @ theta[:, 3]


def _half_resolution_diffeomorphism(shape: Sequence[int], max_std: float, control_spacing: int, generator: torch.Generator) -> torch.Tensor:
    """`registration.random_diffeomorphism` for a 1 mm grid of ``shape``, integrated on a 2 mm
    grid and interpolated back, as `networks.CoarseVoxelMorph` integrates its own: a velocity
    this smooth loses nothing to it, and the squarings cost an eighth. Returns (3, *shape) mm."""
    coarse = [-(-int(n) // 2) for n in shape]
    ddf = random_diffeomorphism(coarse, max_std / 2, max(1, control_spacing // 2), generator)
    ddf = F.interpolate(ddf, size=tuple(shape), mode="trilinear", align_corners=False)[0]
    return ddf * torch.tensor([n / c for n, c in zip(shape, coarse)]).view(3, 1, 1, 1)


class SyntheticPairDataset(SyntheticSegmentationDataset):
    """``length`` random registration pairs per epoch, synthesised from label maps.

    Args:
        label_maps, length, seed, fresh, include, exclude, skull_strip_prob, thick_slice_prob,
            max_slice_mm, max_noise, contrasts, transform: as `SyntheticSegmentationDataset`.
            Skull stripping is drawn once per pair (both sides stripped or neither); contrast,
            resolution and noise are drawn for each side on its own.
        patch_size: the volumes' size (voxels at 1 mm), cut about a random point of the fixed
            brain and kept inside the brain's extent where the brain is larger than the patch.
        same_subject_prob: share of pairs made from one label map deformed twice (always so
            when there is one map only); the others pair two different maps.
        max_std, control_spacing: each side's random diffeomorphism
            (`registration.random_diffeomorphism`): velocity SD up to ``max_std`` mm on a grid
            of one control point every ``control_spacing`` mm.
        max_rotation_deg, scale_range, max_shear: each side's random affine map, about the patch
            centre; small, as what the affine step leaves behind. A left-right mirror is drawn
            once per pair, so the anatomy varies and the pair stays a pair.

    Items: ``moving_image`` and ``fixed_image`` float32 (1, *patch), not yet normalised (the
    bundle's intensity transforms do that); ``moving_label`` and ``fixed_label`` uint8
    (1, *patch), 0 background, 1 CSF, 2 grey matter, 3 white matter (`synth.labels.tissue_labels`)
    of the deformed labels each image was made from; ``moving_subject`` and ``fixed_subject``,
    the label maps' file stems.
    """

    def __init__(
        self,
        label_maps: str | os.PathLike | Sequence[str | os.PathLike],
        length: int,
        patch_size: Sequence[int] = (96, 96, 96),
        seed: int = 0,
        fresh: bool = True,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        same_subject_prob: float = 0.2,
        max_std: float = 3.0,
        control_spacing: int = 16,
        max_rotation_deg: float = 3.0,
        scale_range: tuple[float, float] = (0.97, 1.03),
        max_shear: float = 0.02,
        skull_strip_prob: float = 0.8,
        thick_slice_prob: float = 0.4,
        max_slice_mm: float = 6.0,
        max_noise: float = 0.05,
        contrasts: Sequence[str] = CONTRAST_MIX,
        transform: Callable[[dict], dict] | None = None,
    ):
        super().__init__(label_maps, length, patch_size, seed, fresh, include, exclude, skull_strip_prob,
                         thick_slice_prob, max_slice_mm, max_noise, contrasts, transform)
        if not 0.0 <= same_subject_prob <= 1.0:
            raise ValueError(f"same_subject_prob must be in [0, 1], got {same_subject_prob}")
        self.same_subject_prob, self.max_std, self.control_spacing = float(same_subject_prob), float(max_std), int(control_spacing)
        self.max_rotation_deg, self.scale_range, self.max_shear = float(max_rotation_deg), tuple(scale_range), float(max_shear)
        self.placements: list[_Placement | None] = [None] * len(self.paths)
        self._reference: torch.Tensor | None = None

    def _placement(self, index: int) -> _Placement:
        """The head's place in the reference frame, fitted once (a fraction of a second)."""
        if self.placements[index] is None:
            points = _brain_points(self._head(index))
            centre = points.mean(dim=0)
            low, high = torch.quantile(points, 0.005, dim=0), torch.quantile(points, 0.995, dim=0)  # not the spinal CSF's tail
            if self._reference is None:
                self._reference = _render_brain(self._head(0), _brain_points(self._head(0)).mean(dim=0))
            if index == 0:
                matrix, shift = torch.eye(3), torch.zeros(3)
            else:  # the reference brain's grid mapped onto this head's, as AffineAlignd maps fixed onto moving
                theta = affine_align(_render_brain(self._head(index), centre), self._reference, scales=_ALIGN_POOLING)
                matrix, shift = _theta_to_mm(theta[0])
            self.placements[index] = _Placement(matrix, centre + shift, low, high)
        return self.placements[index]

    def _patch_centre(self, index: int, generator: torch.Generator) -> torch.Tensor:
        """A random point of the brain of head ``index``, moved inwards so that the patch stays
        within the brain's extent, in the reference frame (mm)."""
        head, place = self._head(index), self._placement(index)
        points = _brain_points(head)
        point = points[int(torch.randint(len(points), (), generator=generator))]
        half = torch.tensor(self.patch_size, dtype=torch.float32) / 2  # mm: the patch is at 1 mm
        inside = point.clamp(place.low + half, place.high - half)
        point = torch.where(place.high - place.low > 2 * half, inside, (place.low + place.high) / 2)
        return torch.linalg.solve(place.matrix, point - place.offset)

    def _side(self, index: int, centre: torch.Tensor, mirror: torch.Tensor, stripped: bool, generator: torch.Generator) -> dict:
        """One side of the pair: head ``index`` about the reference-frame ``centre``, deformed,
        then imaged."""
        head, place = self._head(index), self._placement(index)
        turn = random_matrix(3, generator, self.max_rotation_deg, self.scale_range, self.max_shear, flip=False) @ mirror
        ddf = _half_resolution_diffeomorphism(self.patch_size, self.max_std, self.control_spacing, generator)
        matrix = place.matrix @ turn  # patch mm -> head mm
        displacement = (matrix @ ddf.reshape(3, -1)).reshape(3, *self.patch_size)
        grid = warp_grid(self.patch_size, (1.0, 1.0, 1.0), head.labels.shape, head.spacing, matrix,
                         place.offset + place.matrix @ centre, displacement)
        labels = sample(head.labels, grid, mode="nearest")
        if stripped:
            labels = skull_strip(labels)
        image = simulate_scan(labels, generator, self.contrasts, stripped, self.thick_slice_prob, self.max_slice_mm, self.max_noise)
        return {"image": image[None].float(), "label": tissue_labels(labels)[None], "subject": self.paths[index].name.split(".")[0]}

    def __getitem__(self, index: int) -> dict:
        generator = self._generator(int(index))
        count = len(self.paths)
        fixed = int(torch.randint(count, (), generator=generator))
        same = count == 1 or uniform(generator, 0, 1) < self.same_subject_prob
        moving = fixed if same else (fixed + 1 + int(torch.randint(count - 1, (), generator=generator))) % count
        centre = self._patch_centre(fixed, generator)
        # left-right, the only mirror a RAS-oriented scan shows; the same for both sides
        mirror = torch.diag(torch.tensor([-1.0 if uniform(generator, 0, 1) < 0.5 else 1.0, 1.0, 1.0]))
        stripped = uniform(generator, 0, 1) < self.skull_strip_prob
        item = {}
        for prefix, head in (("moving", moving), ("fixed", fixed)):
            item.update({f"{prefix}_{key}": value for key, value in self._side(head, centre, mirror, stripped, generator).items()})
        return self.transform(item) if self.transform is not None else item
