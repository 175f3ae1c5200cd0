"""Reconstruction metrics: NMSE, PSNR and SSIM exactly as fastMRI defines them.

fastMRI's ``fastmri/evaluate.py`` is the reference that papers compare to, so these functions
reproduce its numbers on the same arrays (to floating-point rounding):

- every metric is computed over a whole volume ``(slice, H, W)``, not averaged per slice,
  except SSIM, which fastMRI averages over slices;
- ``maxval`` (the data range of PSNR and SSIM) defaults to ``gt.max()`` over the whole volume,
  so that every slice of a volume is judged against the same range;
- SSIM is scikit-image's ``structural_similarity`` with its defaults: a 7x7 uniform window,
  K1 = 0.01, K2 = 0.03, sample covariance (N / (N - 1)), averaged over the interior pixels
  where the window fits entirely inside the image.

They are written in torch, in float64, so that they run on the device where the volumes
already are; only the final scalar leaves it. Inputs may be torch tensors or numpy arrays.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mribundles.errors import InvalidInputError

__all__ = ["nmse", "psnr", "ssim"]

# scikit-image's structural_similarity defaults, which fastMRI uses unchanged.
_SSIM_WIN = 7
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03

ArrayLike = torch.Tensor | np.ndarray


def _as_volumes(gt: ArrayLike, pred: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a (gt, pred) pair and return both as float64 tensors of shape (slice, H, W).

    A 2D input (H, W) becomes one slice. ``pred`` is moved to ``gt``'s device (a no-op when
    both already live there). Raises ``InvalidInputError`` (a ``ValueError``) on a shape
    mismatch, a dimension other than 2 or 3, complex data, or NaN/inf values.
    """
    gt_t = torch.as_tensor(gt)
    pred_t = torch.as_tensor(pred, device=gt_t.device)
    if gt_t.shape != pred_t.shape:
        raise InvalidInputError(
            f"metric inputs differ in shape: gt {tuple(gt_t.shape)} vs pred {tuple(pred_t.shape)}"
        )
    if gt_t.ndim not in (2, 3):
        raise InvalidInputError(
            f"metric inputs must be (H, W) or (slice, H, W), got shape {tuple(gt_t.shape)}"
        )
    if gt_t.is_complex() or pred_t.is_complex():
        # The fastMRI metrics are defined on magnitude images; silently taking .real would hide
        # a missing abs() upstream.
        raise InvalidInputError("metric inputs must be real (take the magnitude first)")
    gt_t = gt_t.to(torch.float64)
    pred_t = pred_t.to(torch.float64)
    for name, t in (("gt", gt_t), ("pred", pred_t)):
        if not bool(torch.isfinite(t).all()):
            raise InvalidInputError(f"metric input {name} contains NaN or inf values")
    if gt_t.ndim == 2:
        gt_t, pred_t = gt_t[None], pred_t[None]
    return gt_t, pred_t


def _data_range(gt: torch.Tensor, maxval: float | torch.Tensor | None) -> torch.Tensor:
    """The data range of PSNR/SSIM: ``maxval`` if given, else the volume's maximum (fastMRI)."""
    if maxval is None:
        return gt.max()
    return torch.as_tensor(maxval, dtype=torch.float64, device=gt.device)


def nmse(gt: ArrayLike, pred: ArrayLike) -> float:
    """Normalised mean squared error ``||gt - pred||^2 / ||gt||^2`` over the whole volume.

    Args:
        gt: reference, real, (slice, H, W) or (H, W).
        pred: reconstruction, same shape as ``gt``.

    Returns:
        NMSE as a Python float (0 for a perfect reconstruction; inf or nan if ``gt`` is all zeros,
        as in fastMRI).
    """
    gt_t, pred_t = _as_volumes(gt, pred)
    return float(((gt_t - pred_t) ** 2).sum() / (gt_t**2).sum())


def psnr(gt: ArrayLike, pred: ArrayLike, maxval: float | torch.Tensor | None = None) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(maxval^2 / MSE)``, over the whole volume.

    Args:
        gt: reference, real, (slice, H, W) or (H, W).
        pred: reconstruction, same shape as ``gt``.
        maxval: data range; defaults to ``gt.max()`` over the volume (not per slice), as fastMRI.

    Returns:
        PSNR as a Python float (inf when ``pred`` equals ``gt``).
    """
    gt_t, pred_t = _as_volumes(gt, pred)
    data_range = _data_range(gt_t, maxval)
    mse = ((gt_t - pred_t) ** 2).mean()
    return float(10.0 * torch.log10(data_range**2 / mse))


def _uniform_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over every 7x7 window that fits inside each slice: (S, H, W) -> (S, H-6, W-6).

    scikit-image filters the full image (reflecting at the border) and then crops 3 pixels on
    each side; the cropped pixels are exactly the windows that never touch the border, so a
    'valid' average pool gives the same values without computing the discarded ones.
    """
    return F.avg_pool2d(x[:, None], kernel_size=_SSIM_WIN, stride=1)[:, 0]


def ssim(gt: ArrayLike, pred: ArrayLike, maxval: float | torch.Tensor | None = None) -> float:
    """Structural similarity, averaged over slices, as fastMRI (scikit-image defaults).

    Per slice: the SSIM map of Wang et al. with a 7x7 uniform window, K1 = 0.01, K2 = 0.03 and
    sample (N-1) covariance, averaged over the pixels where the window fits; then the mean of
    these per-slice values.

    Args:
        gt: reference, real, (slice, H, W) or (H, W); H and W at least 7.
        pred: reconstruction, same shape as ``gt``.
        maxval: data range; defaults to ``gt.max()`` over the volume (not per slice), as fastMRI.

    Returns:
        Mean SSIM as a Python float (1 when ``pred`` equals ``gt``).
    """
    gt_t, pred_t = _as_volumes(gt, pred)
    if min(gt_t.shape[-2:]) < _SSIM_WIN:
        raise InvalidInputError(
            f"SSIM needs slices of at least {_SSIM_WIN}x{_SSIM_WIN}, got {tuple(gt_t.shape[-2:])}"
        )
    data_range = _data_range(gt_t, maxval)
    c1 = (_SSIM_K1 * data_range) ** 2
    c2 = (_SSIM_K2 * data_range) ** 2
    n = _SSIM_WIN**2
    cov_norm = n / (n - 1)  # unbiased (sample) covariance, scikit-image's default

    ux, uy = _uniform_mean(gt_t), _uniform_mean(pred_t)
    vx = cov_norm * (_uniform_mean(gt_t * gt_t) - ux * ux)
    vy = cov_norm * (_uniform_mean(pred_t * pred_t) - uy * uy)
    vxy = cov_norm * (_uniform_mean(gt_t * pred_t) - ux * uy)

    ssim_map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return float(ssim_map.mean(dim=(-2, -1)).mean())

