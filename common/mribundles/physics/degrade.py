"""Resolution loss as MRI causes it: central k-space truncation and thick slices.

Grid convention, one for both degradations, per degraded axis with integer factor ``f``
(high-resolution size ``N = f * M``, ``M`` low-resolution voxels):

- LR voxel ``i`` covers HR voxels ``f*i .. f*i + f - 1``; its centre lies at the HR index
  ``f*i + (f - 1) / 2``. Both grids cover the same field of view: in HR index units, LR voxel
  ``i`` spans ``[f*i - 1/2, f*i + f - 1/2]`` and the whole LR grid ``[-1/2, N - 1/2]``, as the
  HR grid does.
- Hence the LR affine is ``A_lr = A_hr @ T`` with ``T = [[f, 0, 0, (f-1)/2], ...]`` on each
  degraded axis (`lowres_affine`): LR index ``i`` -> HR index ``f*i + (f-1)/2`` -> world mm.
  The inverse (`highres_affine`) gives the HR target grid of an LR file.
- This is PyTorch's ``align_corners=False`` convention for an integer scale factor: HR index
  ``n`` reads the LR grid at the continuous index ``(n - (f-1)/2) / f``.

`thick_slices` averages each slab of ``f`` HR slices (a box slice profile), so its LR samples
sit at the slab centres. `truncate_kspace` keeps the spatial frequencies ``|k| < M/2`` of the
``N`` and evaluates the band-limited image at the same LR centres: a half-voxel ``(f-1)/2`` shift
is a linear phase in k-space. For an even ``M`` the Nyquist line ``|k| = M/2`` is dropped: ``M``
samples hold one real number of a Nyquist cosine where its amplitude and phase are two, so
keeping it makes the point spread function lean towards the LR voxel centres; without it the
blur is an ideal, symmetric low-pass filter wherever the structure lies. Both degradations take
real volumes (magnitude images of a real-valued object) and return real volumes.

Volumes are real tensors ``(..., x, y, z)``; axes are spatial axes 0, 1, 2 of the last three
dimensions. The Fourier transforms here are 1D along one axis with the origin at index 0 (not
`physics.fft`'s centred 2D ones), so that "HR index n" and "LR index i" above mean exactly what
they say.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "crop_to_multiple",
    "grid_offset",
    "highres_affine",
    "kept_frequencies",
    "lowres_affine",
    "shift_phase",
    "thick_slices",
    "truncate_kspace",
]


def grid_offset(factor: int) -> float:
    """HR index of LR voxel 0's centre, ``(f - 1) / 2``."""
    return (factor - 1) / 2.0


def _check_factors(factors: Sequence[int]) -> tuple[int, int, int]:
    factors = tuple(int(f) for f in factors)
    if len(factors) != 3 or min(factors) < 1:
        raise ValueError(f"factors must be three integers >= 1 (x, y, z), got {factors}")
    return factors


def _refinement(factors: Sequence[int]) -> np.ndarray:
    """(4, 4) LR index -> HR index: ``n = f*i + (f-1)/2`` on each axis."""
    t = np.eye(4)
    for axis, f in enumerate(_check_factors(factors)):
        t[axis, axis] = f
        t[axis, 3] = grid_offset(f)
    return t


def lowres_affine(affine: np.ndarray | torch.Tensor, factors: Sequence[int]) -> np.ndarray:
    """The LR grid's (4, 4) affine: LR voxel index -> world mm (see the module docstring).

    Args:
        affine: (4, 4) HR voxel index -> world mm.
        factors: (fx, fy, fz) integer factors, 1 for an axis kept at full resolution.
    """
    return np.asarray(affine, dtype=np.float64) @ _refinement(factors)


def highres_affine(affine: np.ndarray | torch.Tensor, factors: Sequence[int]) -> np.ndarray:
    """The HR target grid's (4, 4) affine of an LR grid; the inverse of `lowres_affine`."""
    return np.asarray(affine, dtype=np.float64) @ np.linalg.inv(_refinement(factors))


def crop_to_multiple(volume: torch.Tensor, factors: Sequence[int]) -> torch.Tensor:
    """Drop the last voxels of each axis so its size is a multiple of its factor.

    Voxel 0 stays voxel 0, so the affine is unchanged. (..., x, y, z) -> (..., fx*Mx, fy*My, fz*Mz).
    """
    factors = _check_factors(factors)
    sizes = [(n // f) * f for n, f in zip(volume.shape[-3:], factors)]
    if min(sizes) == 0:
        raise ValueError(f"volume {tuple(volume.shape[-3:])} is smaller than the factors {factors}")
    return volume[..., : sizes[0], : sizes[1], : sizes[2]]


def kept_frequencies(n: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices into an unshifted length-``n`` spectrum of the central ``m`` frequencies.

    Returns ``(index, k)``: ``index`` (m,) positions in ``torch.fft.fft``'s output order, and
    ``k`` (m,) their integer frequencies, both in the order of a length-``m`` spectrum
    (``fftfreq(m) * m``: 0, 1, ..., then the negative ones), so that ``spectrum_n[..., index]`` is
    the spectrum of the length-``m`` band-limited signal.
    """
    k = torch.fft.fftfreq(m, d=1.0 / m).round().long()
    return k % n, k


def _axis_dim(volume: torch.Tensor, axis: int) -> int:
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be a spatial axis 0, 1 or 2, got {axis}")
    if volume.ndim < 3:
        raise ValueError(f"expected a volume (..., x, y, z), got shape {tuple(volume.shape)}")
    return volume.ndim - 3 + axis


def _complex_dtype(volume: torch.Tensor) -> torch.dtype:
    """complex128 for float64 volumes, complex64 for every other real dtype."""
    return torch.complex128 if volume.dtype == torch.float64 else torch.complex64


def shift_phase(k: torch.Tensor, shift: float, n: int, like: torch.Tensor) -> torch.Tensor:
    """``exp(2 pi i k shift / n)``: a signal sampled ``shift`` voxels later, per frequency ``k``,
    as a complex tensor of ``like``'s dtype and device."""
    real = torch.float64 if like.dtype == torch.complex128 else torch.float32
    angle = (2 * math.pi * shift / n) * k.to(device=like.device, dtype=real)
    return torch.polar(torch.ones_like(angle), angle)


def _reshape_along(vector: torch.Tensor, dim: int, ndim: int) -> torch.Tensor:
    shape = [1] * ndim
    shape[dim] = vector.numel()
    return vector.reshape(shape)


def truncate_kspace(volume: torch.Tensor, factors: Sequence[int]) -> torch.Tensor:
    """Keep the central 1/f of k-space along each axis: the image a coarser acquisition gives.

    Per axis with ``f > 1``: orthonormal FFT over the ``N`` HR voxels, keep the frequencies
    ``|k| < M/2`` of ``M = N / f`` (an even ``M``'s Nyquist line is zeroed, see the module
    docstring), shift the sampling grid by ``(f-1)/2`` HR voxels (a linear phase), and inverse-FFT
    over ``M``. LR voxel ``i`` is the low-pass image at HR index ``f*i + (f-1)/2``; a constant image
    keeps its value, and ``sinc_interpolate(truncate_kspace(v, f), f)`` is ``v`` through an ideal
    low-pass filter.

    Args:
        volume: real (..., x, y, z); each degraded axis's size a multiple of its factor
            (`crop_to_multiple`).
        factors: (fx, fy, fz), e.g. (4, 4, 1) for 4x4 in-plane truncation of axial slices.

    Returns:
        real (..., x/fx, y/fy, z/fz), same dtype as ``volume`` (computed in complex64, or
        complex128 for float64), on the LR grid (`lowres_affine`).
    """
    factors = _check_factors(factors)
    if volume.is_complex():
        raise ValueError("truncate_kspace takes a real (magnitude) volume")
    out = volume.to(_complex_dtype(volume))
    for axis, f in enumerate(factors):
        if f == 1:
            continue
        dim = _axis_dim(out, axis)
        n = out.shape[dim]
        if n % f:
            raise ValueError(f"axis {axis} has {n} voxels, not a multiple of the factor {f} (crop_to_multiple)")
        m = n // f
        index, k = kept_frequencies(n, m)
        full = torch.fft.fft(out, dim=dim, norm="ortho")
        spectrum = full.index_select(dim, index.to(out.device)) * _reshape_along(shift_phase(k, grid_offset(f), n, out), dim, out.ndim)
        if m % 2 == 0:
            spectrum = spectrum.index_fill(dim, torch.tensor([m // 2], device=out.device), 0)
        out = (torch.fft.ifft(spectrum, dim=dim, norm="ortho") / math.sqrt(f)).real.to(out.dtype)
    return out.real.to(volume.dtype)


def thick_slices(volume: torch.Tensor, factor: int, axis: int) -> torch.Tensor:
    """Average each slab of ``factor`` consecutive slices (a box slice profile), one per slab.

    LR slice ``i`` is the mean of HR slices ``factor*i .. factor*i + factor - 1``, centred at HR
    index ``factor*i + (factor-1)/2``.

    Args:
        volume: real (..., x, y, z); the size along ``axis`` a multiple of ``factor``.
        factor: slab thickness in HR slices.
        axis: spatial axis 0, 1 or 2 across which the slices are stacked.

    Returns:
        (..., x, y, z) with ``axis`` shortened ``factor`` times, same dtype.
    """
    dim = _axis_dim(volume, axis)
    n = volume.shape[dim]
    if factor < 1 or n % factor:
        raise ValueError(f"axis {axis} has {n} voxels, not a multiple of the factor {factor} (crop_to_multiple)")
    shape = list(volume.shape)
    shape[dim : dim + 1] = [n // factor, factor]
    return volume.reshape(shape).mean(dim=dim + 1)
