"""Images synthesised from anatomical label maps, after SynthSeg (Billot et al., Medical Image
Analysis 2023) and SynthMorph (Hoffmann et al., IEEE TMI 2022). Written from the papers.

A label map says where each structure is; an MR image of it is, to first order, a piecewise
constant intensity per structure, blurred by the acquisition's point-spread function, shaded by
the receive field and distorted by a gamma-like non-linearity. Drawing each of those at random,
afresh for every example, gives images of any contrast (T1-, T2-, PD-like or arbitrary), which
is what makes networks trained on them robust to contrast and quality.

Shapes: a label map is an integer tensor of 2 or 3 spatial dims, (H, W) or (D, H, W); images are
float32 of the same shape. Everything is torch, on the label map's device, drawn from a seeded
``torch.Generator`` (on the CPU) so that the same seed gives the same image.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mribundles.errors import InvalidInputError
from mribundles.io.validation import one_line
from mribundles.synth.spatial import smooth_noise, uniform

__all__ = [
    "CONTRASTS",
    "FREESURFER_TISSUE",
    "TISSUE_NAMES",
    "load_label_map",
    "require_contrasts",
    "skull_strip",
    "sulcal_csf",
    "synthesize_image",
    "tissue_labels",
]

TISSUE_NAMES = ("background", "csf", "gm", "wm")

# FreeSurfer labels by tissue class, as FSL FAST and SPM define the classes: CSF is the ventricles
# and the sulcal CSF (label 24), grey matter the cortex and the deep grey nuclei, white matter
# the cerebral and cerebellar white matter, brain stem and ventral diencephalon.
_CSF = (4, 5, 14, 15, 24, 31, 43, 44, 63, 72)
_GM = (3, 8, 10, 11, 12, 13, 17, 18, 26, 42, 47, 49, 50, 51, 52, 53, 54, 58, 80)
_WM = (2, 7, 16, 28, 41, 46, 60, 77, 85, 251, 252, 253, 254, 255)
FREESURFER_TISSUE: dict[int, int] = {**{l: 1 for l in _CSF}, **{l: 2 for l in _GM}, **{l: 3 for l in _WM}}
# Other labels of the SynthSeg maps: vessels (30, 62), lesions (25, 57), a few small structures
# (136, 137, 163, 164) and the extra-cerebral classes (500s: skull, scalp, fat, eyes, ...).
# They are real tissue, not background, so they take their own random intensities.
_KNOWN_OTHER = {0, 25, 30, 57, 62, 136, 137, 163, 164}
EXTRA_CEREBRAL = range(500, 600)  # SynthSeg's non-brain classes: skull, scalp, fat, eyes, ...

# Mean intensity of (csf, gm, wm) in each preset contrast, on a [0, 1] scale; the other labels
# draw theirs uniformly. From the ordering and rough ratios of 3 T spin-echo/gradient-echo images.
CONTRASTS = {
    "t1": (0.15, 0.50, 0.75),
    "t2": (0.95, 0.55, 0.40),
    "pd": (0.80, 0.70, 0.60),
}


def _known(label: int) -> bool:
    return label in FREESURFER_TISSUE or label in _KNOWN_OTHER or label in EXTRA_CEREBRAL


def load_label_map(path: str | os.PathLike, image_shape: tuple[int, ...] | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """Read a 3D FreeSurfer-style label map (NIfTI) and check it.

    Args:
        path: the label map.
        image_shape: when the map labels an image, that image's shape, which the map must match.

    Returns:
        (labels, affine): int16 (X, Y, Z) as stored, and the (4, 4) voxel-to-RAS affine.

    Raises:
        InvalidInputError: not 3D, empty (background only), non-integer values, labels that the
            tissue mapping does not know, or a grid that does not match ``image_shape``.
    """
    import nibabel as nib

    path = Path(path)
    try:
        image = nib.load(str(path))
        data = np.asarray(image.dataobj)
    except FileNotFoundError:
        raise InvalidInputError("label map not found", path) from None
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise InvalidInputError(f"not a readable NIfTI label map ({one_line(exc)})", path) from None
    if data.ndim != 3:
        raise InvalidInputError(f"label map must be 3D, got shape {data.shape}", path)
    if image_shape is not None and tuple(data.shape) != tuple(image_shape):
        raise InvalidInputError(f"label map grid {data.shape} does not match its image {tuple(image_shape)}", path)
    if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)):
        raise InvalidInputError("label map holds non-integer values", path)
    values = np.unique(data).astype(int)
    if values.max(initial=0) == 0:
        raise InvalidInputError("label map is empty (background only)", path)
    unknown = [int(v) for v in values if not _known(int(v))]
    if unknown:
        raise InvalidInputError(f"label map has labels the tissue mapping does not know: {unknown[:8]}", path)
    return torch.from_numpy(data.astype(np.int16)), image.affine


def skull_strip(labels: torch.Tensor) -> torch.Tensor:
    """``labels`` with every extra-cerebral class (`EXTRA_CEREBRAL`: skull, scalp, fat, eyes, ...)
    set to background, as in a skull-stripped scan."""
    return torch.where(labels >= EXTRA_CEREBRAL.start, torch.zeros_like(labels), labels)


def tissue_labels(labels: torch.Tensor) -> torch.Tensor:
    """FreeSurfer labels -> 0 background, 1 CSF, 2 grey matter, 3 white matter (uint8).

    Every label outside the three classes (extra-cerebral tissue included) becomes 0."""
    lut = torch.zeros(int(labels.max()) + 1, dtype=torch.uint8, device=labels.device)
    for label, tissue in FREESURFER_TISSUE.items():
        if label < lut.numel():
            lut[label] = tissue
    return lut[labels.long()]


def sulcal_csf(tissue: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """Tissue labels with the sulci filled in as CSF.

    FreeSurfer's aseg labels no sulcal CSF: the spaces between the gyri are left as background, so
    a scan labelled by it would teach a segmenter that sulcal CSF is not CSF. A morphological
    closing of the labelled brain (a cube of side ``2 * radius + 1``) spans those spaces but not the
    space outside the brain; the voxels it adds become CSF, which is what the classes' definition
    (FSL FAST, SPM) and the library's synthesised labels call them.

    Args:
        tissue: (X, Y, Z) labels from `tissue_labels` (0 background, 1 CSF, 2 GM, 3 WM).
        radius: the closing's half-width in voxels; sulci are a few millimetres wide.
    """
    brain = (tissue > 0).float()[None, None]
    size = 2 * radius + 1
    dilated = torch.nn.functional.max_pool3d(brain, size, stride=1, padding=radius)
    # outside the grid counts as background, so a brain that reaches the edge is not closed onto it
    outside_is_empty = torch.nn.functional.pad(dilated, [radius] * 6)
    closed = -torch.nn.functional.max_pool3d(-outside_is_empty, size, stride=1)
    return torch.where((closed[0, 0] > 0) & (tissue == 0), torch.ones_like(tissue), tissue)


def require_contrasts(contrasts: Sequence[str]) -> tuple[str, ...]:
    """``contrasts`` as a tuple, or a ValueError when it is empty or names an unknown contrast
    (one of "random" and `CONTRASTS`' presets, repeated to weigh it)."""
    unknown = sorted(set(contrasts) - {"random", *CONTRASTS})
    if not contrasts or unknown:
        raise ValueError(f"contrasts must be a non-empty list of random, {', '.join(CONTRASTS)}; got {list(contrasts)}")
    return tuple(contrasts)


def _label_means(values: torch.Tensor, contrast: str, generator: torch.Generator) -> torch.Tensor:
    """Mean intensity per label value (values sorted ascending, 0 first when present)."""
    means = torch.rand(len(values), generator=generator)
    if contrast in CONTRASTS:
        class_means = torch.tensor(CONTRASTS[contrast])
        for i, value in enumerate(values.tolist()):
            tissue = FREESURFER_TISSUE.get(int(value))
            if tissue is not None:  # the preset's class mean, jittered per structure
                means[i] = class_means[tissue - 1] + 0.05 * torch.randn((), generator=generator)
    return means.clamp(0, 1)


def _gaussian_blur(image: torch.Tensor, sigmas: list[float]) -> torch.Tensor:
    """Separable Gaussian blur of an (H, W) or (D, H, W) image, one sigma (voxels) per axis."""
    from monai.networks.layers import GaussianFilter

    if max(sigmas) <= 0.05:
        return image
    smoothing = GaussianFilter(image.ndim, [max(s, 1e-3) for s in sigmas]).to(image.device)
    return smoothing(image[None, None])[0, 0]


def synthesize_image(
    labels: torch.Tensor,
    generator: torch.Generator,
    contrast: str | None = None,
    background: str = "zero",
    blur_range: tuple[float, float] = (0.3, 1.2),
    bias_std: float = 0.3,
    gamma_std: float = 0.25,
    texture_range: tuple[float, float] = (0.0, 0.06),
) -> torch.Tensor:
    """An image of ``labels`` with random per-structure intensities and artefacts.

    Steps, each drawn afresh: a mean intensity per label (the ``contrast`` preset's class means
    for CSF/GM/WM, uniform for the rest; all uniform when ``contrast`` is None or "random"), a
    Gaussian texture within each label, a partial-volume blur, a smooth multiplicative bias field
    (log-normal), a gamma change, and a rescale to [0, 1].

    Args:
        labels: integer (H, W) or (D, H, W) label map.
        generator: seeded CPU generator; every random draw comes from it.
        contrast: "t1", "t2", "pd", "random" or None (uniform intensities for every label).
        background: "zero" keeps label 0 at zero intensity (air in a real scan, so the
            acquisition simulation puts its own noise there), "random" draws it like a tissue
            (SynthSeg's choice for segmentation training).
        blur_range: partial-volume blur sigma in voxels, drawn per axis.
        bias_std: standard deviation of the log bias field.
        gamma_std: standard deviation of the log of the gamma exponent.
        texture_range: range of the within-label standard deviation.

    Returns:
        float32 image of the labels' shape, in [0, 1], on the labels' device.
    """
    if labels.ndim not in (2, 3) or labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must be an integer (H, W) or (D, H, W) map, got {tuple(labels.shape)} {labels.dtype}")
    if contrast not in (None, "random", *CONTRASTS):
        raise ValueError(f"unknown contrast {contrast!r}; choose one of random, {', '.join(CONTRASTS)}")
    values, index = torch.unique(labels, return_inverse=True)
    means = _label_means(values.cpu(), contrast or "random", generator)
    low, high = texture_range
    stds = low + (high - low) * torch.rand(len(values), generator=generator)
    if background == "zero" and int(values[0]) == 0:
        means[0], stds[0] = 0.0, 0.0
    device = labels.device
    image = means.to(device)[index] + stds.to(device)[index] * torch.randn(labels.shape, generator=generator).to(device)
    image = _gaussian_blur(image.clamp_min(0), [uniform(generator, *blur_range) for _ in range(labels.ndim)])
    bias = smooth_noise(tuple(labels.shape), 4, bias_std * float(torch.rand((), generator=generator)), generator)[0]
    image = image * torch.exp(bias.to(device))
    image = image / image.amax().clamp_min(1e-6)
    gamma = float(torch.exp(gamma_std * torch.randn((), generator=generator)))
    return image.clamp(0, 1) ** gamma
