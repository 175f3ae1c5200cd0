"""Whole synthetic heads from the real label maps.

The segmentation and registration engines draw patches. Super-resolution cannot: a coarser
acquisition acts on the whole field of view (k-space truncation is a convolution over all of
it), so its synthetic examples are whole heads that then go through the same degradation as a
real volume. A head is one of the 20 real label maps, deformed (random affine map and smooth
displacement, as in `synth.segmentation`), optionally skull-stripped, and imaged with a random
contrast (`synth.labels.synthesize_image`, Billot et al. 2023), on an isotropic grid (1 mm by
default) with a margin of air around it. The same (map, seed) always gives the same head.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from mribundles.synth.labels import require_contrasts, skull_strip, synthesize_image
from mribundles.synth.segmentation import LabelHead
from mribundles.synth.spatial import random_matrix, sample, smooth_displacement, uniform, warp_grid

__all__ = ["synthesize_head"]


def synthesize_head(
    head: LabelHead,
    seed: int,
    spacing: float = 1.0,
    contrasts: Sequence[str] = ("t1",),
    skull_strip_prob: float = 0.5,
    margin: int = 8,
    max_rotation_deg: float = 10.0,
    max_displacement_mm: float = 3.0,
) -> torch.Tensor:
    """A float32 (D, H, W) image in [0, 1] of ``head`` (RAS axes, ``spacing`` mm voxels).

    Args:
        head: a loaded label map (`LabelHead`: RAS, cropped to the head).
        seed: every random draw comes from a generator seeded with it, in a fixed order.
        spacing: voxel size of the image (mm, isotropic); the bundle's high-resolution spacing.
        contrasts: drawn from uniformly ("t1", "t2", "pd", "random"; repeat one to weigh it).
        skull_strip_prob: share of heads with every extra-cerebral label set to background
            (zero intensity), as in a skull-stripped scan.
        margin: voxels of background on every side beyond the deformed head's reach, so that it
            does not touch the field of view's edge (nor, through a periodic k-space, the
            opposite edge).
        max_rotation_deg, max_displacement_mm: the deformation's range (scale 0.9 to 1.1 per axis).
    """
    contrasts = require_contrasts(contrasts)
    generator = torch.Generator().manual_seed(int(seed))
    matrix = random_matrix(3, generator, max_rotation_deg=max_rotation_deg, scale_range=(0.9, 1.1), max_shear=0.03, flip=False)
    if uniform(generator, 0, 1) < 0.5:  # left-right mirror: the only flip a RAS-oriented scan shows
        matrix = matrix @ torch.diag(torch.tensor([-1.0, 1.0, 1.0]))
    # The grid holds the whole deformed head: the source box's corners mapped back through the
    # affine map, plus the displacement's reach (three standard deviations) and the margin.
    half = torch.tensor([n * s / 2 for n, s in zip(head.labels.shape, head.spacing)])
    corners = torch.cartesian_prod(*[torch.tensor([-h, h]) for h in half.tolist()])
    reach = (torch.linalg.inv(matrix.double()) @ corners.double().T).abs().amax(dim=1)
    shape = [2 * (math.ceil((r + 3 * max_displacement_mm) / spacing) + margin) for r in reach.tolist()]
    grid = warp_grid(shape, (spacing,) * 3, head.labels.shape, head.spacing, matrix, None,
                     smooth_displacement(shape, generator, max_std_mm=max_displacement_mm))
    labels = sample(head.labels, grid, mode="nearest")
    if uniform(generator, 0, 1) < skull_strip_prob:
        labels = skull_strip(labels)
    contrast = contrasts[int(torch.randint(len(contrasts), (), generator=generator))]
    return synthesize_image(labels, generator, contrast=contrast, background="zero")
