"""Interpolation of a low-resolution volume onto its high-resolution grid.

Every mode follows the grid convention of `mribundles.physics.degrade`: along an axis with
factor ``f``, HR index ``n`` reads the LR grid at the continuous LR index ``u = (n - (f-1)/2) / f``
(PyTorch's ``align_corners=False``). Each mode is separable, applied axis by axis:

- ``"linear"`` (trilinear when three axes are degraded): 2-tap linear interpolation; ``u`` is
  clamped to ``[0, M - 1]``, so the half LR voxel at either end repeats the edge value. Equal to
  ``torch.nn.functional.interpolate(mode="trilinear", align_corners=False)``.
- ``"cubic"``: Keys' cubic convolution, 4 taps, ``a = -0.5`` (Keys 1981; MATLAB's and Pillow's
  bicubic; PyTorch's bicubic uses a = -0.75 and is reproduced with ``cubic_a=-0.75``); taps
  beyond the ends repeat the edge voxel.
- ``"sinc"``: zero-padded k-space (the scanner's zero-filling interpolation): the LR spectrum,
  with the ``(f-1)/2`` shift undone, placed at the centre of an otherwise empty HR spectrum. It
  inverts `degrade.truncate_kspace` on the band that truncation keeps.

Linear and cubic build a small (N, M) weight matrix per axis and apply it with one matmul, on
the volume's device and dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from mribundles.physics.degrade import (
    _axis_dim,
    _check_factors,
    _complex_dtype,
    _reshape_along,
    grid_offset,
    kept_frequencies,
    shift_phase,
)

__all__ = ["INTERPOLATION_MODES", "interpolate", "interpolation_matrix", "sinc_interpolate"]

INTERPOLATION_MODES = ("sinc", "cubic", "linear")


def _source_index(m: int, factor: int, dtype=torch.float64) -> torch.Tensor:
    """(N,) continuous LR index read by each HR index, N = factor * m."""
    n = torch.arange(m * factor, dtype=dtype)
    return (n - grid_offset(factor)) / factor


def _keys_kernel(t: torch.Tensor, a: float) -> torch.Tensor:
    """Keys' cubic convolution kernel at distances ``t`` (any sign)."""
    t = t.abs()
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return torch.where(t <= 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


def interpolation_matrix(m: int, factor: int, mode: str, cubic_a: float = -0.5) -> torch.Tensor:
    """(N, M) float64 weights: ``hr = W @ lr`` along one axis; rows sum to 1.

    Args:
        m: LR size. factor: integer factor (N = factor * m). mode: "linear" or "cubic".
        cubic_a: Keys' parameter of the cubic kernel.
    """
    u = _source_index(m, factor)
    weights = torch.zeros(m * factor, m, dtype=torch.float64)
    rows = torch.arange(m * factor)
    if mode == "linear":
        u = u.clamp(0, m - 1)
        i0 = u.floor().long().clamp(max=max(m - 2, 0))
        w1 = u - i0
        weights.index_put_((rows, i0), 1 - w1, accumulate=True)
        weights.index_put_((rows, (i0 + 1).clamp(max=m - 1)), w1, accumulate=True)
    elif mode == "cubic":
        i0 = u.floor().long()
        for tap in (-1, 0, 1, 2):
            index = i0 + tap
            weights.index_put_((rows, index.clamp(0, m - 1)), _keys_kernel(u - index, cubic_a), accumulate=True)
    else:
        raise ValueError(f"interpolation_matrix mode must be 'linear' or 'cubic', got {mode!r}")
    return weights


def sinc_interpolate(volume: torch.Tensor, factors: Sequence[int]) -> torch.Tensor:
    """Zero-padded k-space interpolation onto the HR grid.

    Per axis with ``f > 1``: orthonormal FFT over the ``M`` LR voxels, undo the ``(f-1)/2`` grid
    shift (a linear phase), place the spectrum at the centre of ``N = f*M`` frequencies (an even
    ``M``'s Nyquist line split evenly between +-M/2, which keeps the image real), inverse FFT.

    Args:
        volume: real LR (..., x, y, z).
        factors: (fx, fy, fz) integer factors.

    Returns:
        real (..., fx*x, fy*y, fz*z), same dtype. ``sinc_interpolate(truncate_kspace(v, f), f)``
        is ``v`` low-pass filtered to the band that truncation keeps, and
        ``truncate_kspace(sinc_interpolate(lr, f), f)`` is ``lr`` less its Nyquist line.
    """
    factors = _check_factors(factors)
    out = volume.to(_complex_dtype(volume))
    for axis, f in enumerate(factors):
        if f == 1:
            continue
        dim = _axis_dim(out, axis)
        m = out.shape[dim]
        n = m * f
        index, k = kept_frequencies(n, m)
        spectrum = torch.fft.fft(out, dim=dim, norm="ortho") * _reshape_along(shift_phase(k, -grid_offset(f), n, out), dim, out.ndim)
        padded_shape = list(out.shape)
        padded_shape[dim] = n
        padded = torch.zeros(padded_shape, dtype=out.dtype, device=out.device).index_copy(dim, index.to(out.device), spectrum)
        # Taking the real part below is the even split of the Nyquist line between -M/2 and +M/2.
        out = (torch.fft.ifft(padded, dim=dim, norm="ortho") * math.sqrt(f)).real.to(out.dtype)
    return out.real.to(volume.dtype)


def interpolate(volume: torch.Tensor, factors: Sequence[int], mode: str = "sinc", cubic_a: float = -0.5) -> torch.Tensor:
    """An LR volume on its HR grid (see the module docstring for the modes).

    Args:
        volume: real LR (..., x, y, z).
        factors: (fx, fy, fz) integer factors; 1 leaves an axis as it is.
        mode: "sinc", "cubic" or "linear".

    Returns:
        real (..., fx*x, fy*y, fz*z), same dtype and device as ``volume``.
    """
    factors = _check_factors(factors)
    if mode == "sinc":
        return sinc_interpolate(volume, factors)
    if mode not in INTERPOLATION_MODES:
        raise ValueError(f"interpolation mode must be one of {INTERPOLATION_MODES}, got {mode!r}")
    out = volume
    for axis, f in enumerate(factors):
        if f == 1:
            continue
        dim = _axis_dim(out, axis)
        weights = interpolation_matrix(out.shape[dim], f, mode, cubic_a).to(device=out.device, dtype=out.dtype)
        out = torch.movedim(torch.movedim(out, dim, -1) @ weights.T, -1, dim)
    return out.contiguous()
