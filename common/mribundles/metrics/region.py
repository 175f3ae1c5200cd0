"""Metrics inside a region: the head of a brain scan, rather than the whole field of view.

A raw scan's field of view is mostly noise (the readout is oversampled, the head is an oval in a
square), so whole-image PSNR is dominated by how a method treats the background. Scoring inside
a head mask, taken from the fully sampled reference, judges the anatomy.
"""

from __future__ import annotations

import numpy as np
import torch

from mribundles.errors import InvalidInputError
from mribundles.metrics.recon import ArrayLike, psnr

__all__ = ["head_mask", "masked_psnr"]


def head_mask(reference: ArrayLike, threshold: float = 0.1, sigma: float = 2.0) -> torch.Tensor:
    """The head in a magnitude image: smoothed, thresholded, largest component, holes filled.

    The reference is smoothed with a Gaussian of `sigma` pixels (so that noise neither makes
    islands nor holes), thresholded at `threshold` times the smoothed maximum, reduced to its
    largest connected component, and filled (the dark skull and CSF inside the scalp count as
    head). At the defaults the edge of the mask lies about two pixels outside the scalp on the
    in-vivo pulseq brain.

    Args:
        reference: real (H, W) or (slice, H, W) magnitude image, e.g. the fully sampled RSS.
        threshold: fraction of the smoothed image's maximum (per slice).
        sigma: Gaussian width in pixels.

    Returns:
        torch.bool of the reference's shape, on its device.
    """
    ref = torch.as_tensor(reference)
    if ref.ndim not in (2, 3) or ref.is_complex():
        raise InvalidInputError(f"head_mask needs a real (H, W) or (slice, H, W) image, got {tuple(ref.shape)} {ref.dtype}")
    slices = ref.detach().to("cpu", torch.float64).numpy().reshape(-1, *ref.shape[-2:])
    masks = np.stack([_head_mask_2d(s, threshold, sigma) for s in slices])
    return torch.from_numpy(masks.reshape(ref.shape)).to(ref.device)


def _head_mask_2d(image: np.ndarray, threshold: float, sigma: float) -> np.ndarray:
    from scipy import ndimage  # a dependency of sigpy; imported here to keep `metrics` light

    smooth = ndimage.gaussian_filter(image, sigma)
    labels, count = ndimage.label(smooth > threshold * smooth.max())
    if count == 0:
        return np.zeros(image.shape, dtype=bool)
    largest = 1 + int(np.argmax(ndimage.sum_labels(np.ones_like(image), labels, range(1, count + 1))))
    return ndimage.binary_fill_holes(labels == largest)


def masked_psnr(gt: ArrayLike, pred: ArrayLike, mask: ArrayLike, maxval: float | torch.Tensor | None = None) -> float:
    """PSNR in dB over the pixels inside `mask`, ``10 log10(maxval^2 / MSE inside the mask)``.

    Args:
        gt: reference, real, (slice, H, W) or (H, W).
        pred: reconstruction, same shape.
        mask: bool, same shape, True where scored (e.g. `head_mask(gt)`).
        maxval: data range; defaults to ``gt.max()`` over the whole volume, as `psnr`, so that
            a masked and a whole-image PSNR of the same images share their peak.
    """
    gt_t, pred_t = torch.as_tensor(gt), torch.as_tensor(pred)
    mask_t = torch.as_tensor(mask, device=gt_t.device).to(torch.bool)
    if mask_t.shape != gt_t.shape or not bool(mask_t.any()):
        raise InvalidInputError(f"mask {tuple(mask_t.shape)} must match the images {tuple(gt_t.shape)} and select a pixel")
    if maxval is None:
        maxval = gt_t.max()
    # One "slice" of the selected pixels: psnr's own validation and arithmetic apply unchanged.
    return psnr(gt_t[mask_t].reshape(1, 1, -1), pred_t.to(gt_t.device)[mask_t].reshape(1, 1, -1), maxval)
