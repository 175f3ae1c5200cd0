"""Sampling masks for k-space undersampling, as seeded pure functions.

Every mask is a ``torch.bool`` tensor of shape (ky, kx), True where k-space is sampled, with
k-space centred (DC at index (ky // 2, kx // 2), as after ``fftshift``). The same arguments
always give the same mask; nothing reads or changes a global random state.

1D masks select whole columns (the last axis, kx), as fastMRI does for its Cartesian knee and
brain data, and reproduce fastMRI's ``RandomMaskFunc`` and ``EquispacedMaskFractionFunc`` line
for line for the same seed, so that results on fastMRI's data are comparable.

The fully sampled centre (the autocalibration region used for coil sensitivities) follows
fastMRI's placement on every axis: a block of n lines out of N starts at ``(N - n + 1) // 2``.
For even N that is centred on N // 2; for odd N it grows to the right first.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
# sigpy's jitted Bridson sampler: sigpy.mri.poisson only wraps its slope search around it.
from sigpy.mri.samp import _poisson as _bridson_sampler
import torch

__all__ = [
    "MASK_KINDS",
    "calibration_size",
    "equispaced_mask_1d",
    "gaussian_mask_2d",
    "make_mask",
    "mask_from_kspace",
    "poisson_mask_2d",
    "random_mask_1d",
]

MASK_KINDS = ("random1d", "equispaced1d", "poisson2d", "gaussian2d")

Seed1D = int | tuple[int, ...]


def _centre_start(n_total: int, n_centre: int) -> int:
    """First index of a centred block of ``n_centre`` lines out of ``n_total`` (fastMRI's)."""
    return (n_total - n_centre + 1) // 2


def _centre_lines(num_cols: int, num_low: int) -> np.ndarray:
    """Boolean (num_cols,) with the ``num_low`` central lines set (fastMRI's centre mask)."""
    lines = np.zeros(num_cols, dtype=bool)
    start = _centre_start(num_cols, num_low)
    lines[start : start + num_low] = True
    return lines


def _columns_to_mask(shape: Sequence[int], columns: np.ndarray) -> torch.Tensor:
    """Broadcast a (kx,) column selection to a (ky, kx) bool tensor."""
    ky, kx = shape
    return torch.from_numpy(columns.astype(bool)).expand(ky, kx).clone()


def _check_shape(shape: Sequence[int]) -> tuple[int, int]:
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"mask shape must be (ky, kx) with positive sizes, got {tuple(shape)}")
    return int(shape[0]), int(shape[1])


def _fastmri_rng(seed: Seed1D) -> tuple[np.random.RandomState, int]:
    """A RandomState in the state fastMRI's MaskFunc has after choosing (cf, acc).

    fastMRI re-seeds its legacy ``RandomState`` with the call's seed, then draws the index of
    the (center_fraction, acceleration) pair with ``randint(len(pairs))`` before drawing any
    line. With a single pair the index is always 0, but the call is replayed so that the
    generator is in exactly the same state for the draws that follow.
    """
    rng = np.random.RandomState(seed)
    choice = rng.randint(1)
    return rng, choice


def random_mask_1d(
    shape: Sequence[int], acceleration: float, center_fraction: float, seed: Seed1D
) -> torch.Tensor:
    """Random column mask, identical to fastMRI's ``RandomMaskFunc([cf], [acc])(..., seed)``.

    ``round(kx * center_fraction)`` central columns are always sampled; every other column is
    sampled independently with probability ``(kx / acc - n_low) / (kx - n_low)``, so that the
    expected number of sampled columns is ``kx / acceleration``.

    Args:
        shape: (ky, kx) of the k-space slice.
        acceleration: undersampling factor R.
        center_fraction: fraction of kx sampled fully at the centre.
        seed: int or tuple of ints (fastMRI's data modules seed with ``tuple(map(ord, fname))``).

    Returns:
        torch.bool (ky, kx), whole columns True or False.
    """
    _, num_cols = _check_shape(shape)
    rng, _ = _fastmri_rng(seed)
    num_low = round(num_cols * center_fraction)
    prob = (num_cols / acceleration - num_low) / (num_cols - num_low)
    outer = rng.uniform(size=num_cols) < prob
    return _columns_to_mask(shape, _centre_lines(num_cols, num_low) | outer)


def equispaced_mask_1d(
    shape: Sequence[int], acceleration: float, center_fraction: float, seed: Seed1D
) -> torch.Tensor:
    """Equispaced column mask, identical to fastMRI's ``EquispacedMaskFractionFunc``.

    Besides the ``round(kx * center_fraction)`` central columns, columns are taken every
    ``acc * (n_low - kx) / (n_low * acc - kx)`` (a fractional spacing, rounded to the nearest
    column with numpy's half-to-even rule), starting at a random offset in
    ``[0, round(spacing))``; the spacing is chosen so that about ``kx / acceleration`` columns
    are sampled in all. As fastMRI notes, the rounding makes the spacing not exactly uniform.

    Args:
        shape: (ky, kx) of the k-space slice.
        acceleration: undersampling factor R.
        center_fraction: fraction of kx sampled fully at the centre.
        seed: int or tuple of ints, as fastMRI.

    Returns:
        torch.bool (ky, kx), whole columns True or False.
    """
    _, num_cols = _check_shape(shape)
    rng, _ = _fastmri_rng(seed)
    num_low = round(num_cols * center_fraction)
    spacing = (acceleration * (num_low - num_cols)) / (num_low * acceleration - num_cols)
    offset = rng.randint(0, high=round(spacing))
    outer = np.zeros(num_cols, dtype=bool)
    outer[np.around(np.arange(offset, num_cols - 1, spacing)).astype(np.uint)] = True
    return _columns_to_mask(shape, _centre_lines(num_cols, num_low) | outer)


def _calib_pair(calib_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(calib_size, (int, np.integer)):
        return int(calib_size), int(calib_size)
    cy, cx = calib_size
    return int(cy), int(cx)


def _centre_box(shape: tuple[int, int], calib: tuple[int, int]) -> np.ndarray:
    """Boolean (ky, kx) with the centred calib box set, placed as fastMRI's centre lines."""
    return _centre_lines(shape[0], calib[0])[:, None] & _centre_lines(shape[1], calib[1])[None, :]


_POISSON_RETRIES = 8
_POISSON_TOLERANCE = 0.1  # sigpy's: the achieved acceleration may miss the target by this much


def _poisson_slope_search(shape: tuple[int, int], acceleration: float, calib: tuple[int, int], seed: int) -> np.ndarray:
    """``sigpy.mri.poisson(shape, acceleration, calib, seed=seed) > 0``, found the same way (the
    same bisection of the density slope, sigpy's own Bridson sampler at each step), so the masks
    are sigpy's wherever sigpy returns. It differs where sigpy never returns: when no slope gives
    an acceleration within the tolerance (the achieved acceleration jumps past the target, as on
    a 64 x 68 grid at R 9.05 with a 4 x 4 box), sigpy's bisection narrows to two adjacent floats
    and repeats the same slope forever (sigpy 0.1.27); here the search ends once the slope stops
    moving, with ``ValueError`` as sigpy raises for a miss.
    """
    ny, nx = shape
    y, x = np.mgrid[:ny, :nx]
    x = np.maximum(abs(x - nx / 2) - calib[-1] / 2, 0)
    x /= x.max()
    y = np.maximum(abs(y - ny / 2) - calib[-2] / 2, 0)
    y /= y.max()
    r = np.sqrt(x**2 + y**2)
    state = np.random.get_state()  # the sampler seeds numpy's global generator: restore it after
    try:
        low, high = 0.0, float(max(nx, ny))
        while low < high:
            slope = (low + high) / 2
            if slope in (low, high):  # adjacent floats: no slope left between them
                break
            radius_x = np.clip((1 + r * slope) * nx / max(nx, ny), 1, None)
            radius_y = np.clip((1 + r * slope) * ny / max(nx, ny), 1, None)
            mask = _bridson_sampler(nx, ny, 30, radius_x, radius_y, calib, seed) * (r < 1)
            achieved = nx * ny / np.sum(mask)
            if abs(achieved - acceleration) < _POISSON_TOLERANCE:
                return mask > 0
            if achieved < acceleration:
                low = slope
            else:
                high = slope
    finally:
        np.random.set_state(state)
    raise ValueError(f"no density slope gives acceleration {acceleration} within {_POISSON_TOLERANCE}")


def poisson_mask_2d(
    shape: Sequence[int], acceleration: float, calib_size: int | Sequence[int], seed: int
) -> torch.Tensor:
    """Variable-density Poisson-disc mask over (ky, kx), from ``sigpy.mri.poisson``.

    The density slope is searched as ``sigpy.mri.poisson`` searches it (bisection until the
    achieved acceleration is within 0.1 of the target; the corners beyond k-space radius 1 stay
    unsampled), but in `_poisson_slope_search`, which gives up where sigpy would loop forever.
    sigpy places an odd-sized calibration box half a line off fastMRI's centre, so the box is
    also set with fastMRI's placement here: ``calibration_size`` then finds it on every kind of
    mask.

    Args:
        shape: (ky, kx).
        acceleration: target undersampling factor (> 1).
        calib_size: fully sampled centre, int (square) or (cy, cx).
        seed: int.

    Returns:
        torch.bool (ky, kx).
    """
    ky, kx = _check_shape(shape)
    calib = _calib_pair(calib_size)
    # The slope search fails for some seeds (no slope reaches the target within the tolerance);
    # retrying with seeds derived from the given one keeps the result a function of the seed.
    for attempt in range(_POISSON_RETRIES):
        try:
            mask = _poisson_slope_search((ky, kx), acceleration, calib, int(seed) + attempt * 1_000_003)
            return torch.from_numpy(mask | _centre_box((ky, kx), calib))
        except ValueError:
            continue
    raise ValueError(f"no Poisson-disc mask of acceleration {acceleration} for shape {(ky, kx)} "
                     f"and calibration {calib} in {_POISSON_RETRIES} attempts")


def gaussian_mask_2d(
    shape: Sequence[int],
    acceleration: float,
    calib_size: int | Sequence[int],
    seed: int,
    sigma: float = 0.3,
) -> torch.Tensor:
    """Variable-density Gaussian random mask over (ky, kx) with exactly ``round(ky*kx/R)`` points.

    The calibration box is sampled fully; the remaining points are drawn without replacement
    from the rest of k-space with probability proportional to
    ``exp(-(y^2 + x^2) / (2 sigma^2))``, where y and x run over [-1, 1] across each axis (so
    the density is elliptical on a non-square grid).

    Args:
        shape: (ky, kx).
        acceleration: undersampling factor R; the mask holds ``round(ky * kx / R)`` points.
        calib_size: fully sampled centre, int (square) or (cy, cx).
        seed: int, seeds a ``numpy.random.Generator``.
        sigma: width of the density in normalised k-space units (1 = edge of k-space).

    Returns:
        torch.bool (ky, kx).
    """
    ky, kx = _check_shape(shape)
    calib = _calib_pair(calib_size)
    centre = _centre_box((ky, kx), calib)
    n_total = round(ky * kx / acceleration)
    n_outer = n_total - int(centre.sum())
    if n_outer < 0:
        raise ValueError(
            f"calibration box {calib} holds {int(centre.sum())} points, more than the "
            f"{n_total} that acceleration {acceleration} allows on {(ky, kx)}"
        )
    y = (np.arange(ky) - ky // 2) / (ky / 2)
    x = (np.arange(kx) - kx // 2) / (kx / 2)
    density = np.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma**2))
    candidates = np.flatnonzero(~centre)
    weights = density.ravel()[candidates]
    rng = np.random.default_rng(seed)
    picked = rng.choice(candidates, size=n_outer, replace=False, p=weights / weights.sum())
    mask = centre.ravel().copy()
    mask[picked] = True
    return torch.from_numpy(mask.reshape(ky, kx))


def make_mask(
    kind: str,
    shape: Sequence[int],
    acceleration: float,
    center_fraction: float,
    seed: int,
) -> torch.Tensor:
    """Build a mask of the named kind; the entry point for configs.

    Args:
        kind: one of ``MASK_KINDS``: "random1d", "equispaced1d", "poisson2d", "gaussian2d".
        shape: (ky, kx).
        acceleration: undersampling factor R.
        center_fraction: fraction of each axis sampled fully at the centre; for the 2D kinds
            the calibration box is ``(round(ky * cf), round(kx * cf))``.
        seed: int.

    Returns:
        torch.bool (ky, kx).
    """
    if kind == "random1d":
        return random_mask_1d(shape, acceleration, center_fraction, seed)
    if kind == "equispaced1d":
        return equispaced_mask_1d(shape, acceleration, center_fraction, seed)
    if kind in ("poisson2d", "gaussian2d"):
        ky, kx = _check_shape(shape)
        calib = (round(ky * center_fraction), round(kx * center_fraction))
        make_2d = poisson_mask_2d if kind == "poisson2d" else gaussian_mask_2d
        return make_2d(shape, acceleration, calib, seed)
    raise ValueError(f"unknown mask kind {kind!r}; valid kinds: {', '.join(MASK_KINDS)}")


def mask_from_kspace(kspace: torch.Tensor) -> torch.Tensor:
    """The sampling mask of prospectively undersampled k-space, which stores zeros where unsampled.

    Args:
        kspace: complex (coil, ky, kx) or (..., coil, ky, kx).

    Returns:
        torch.bool (ky, kx) on the same device, True where any coil (and any leading index,
        e.g. any slice) holds a non-zero sample.
    """
    if kspace.ndim < 2:
        raise ValueError(f"k-space must be (..., coil, ky, kx), got shape {tuple(kspace.shape)}")
    sampled = kspace != 0
    return sampled.reshape(-1, *kspace.shape[-2:]).any(dim=0)


def _growth_order(n: int) -> torch.Tensor:
    """Indices in the order a centred block grows from 1 to n lines (fastMRI's placement).

    Entry k is the line that the block of k + 1 lines adds to the block of k lines.
    """
    order = []
    prev_start = _centre_start(n, 0)
    for size in range(1, n + 1):
        start = _centre_start(n, size)
        order.append(start if start < prev_start else start + size - 1)
        prev_start = start
    return torch.tensor(order, dtype=torch.long)


def calibration_size(mask: torch.Tensor) -> tuple[int, int]:
    """Size (ny, nx) of the fully sampled box at the centre of a (ky, kx) mask (the ACS region).

    Boxes are placed as fastMRI's centre lines (n lines out of N start at (N - n + 1) // 2), so
    every box contains (ky // 2, kx // 2). The box is grown with the grid's aspect ratio as long
    as it stays fully sampled, then extended along ky as far as possible, then along kx. Growing
    in proportion first keeps a dense variable-density centre (where random samples happen to
    touch the calibration block) from yielding a long thin strip; the extensions make the box
    maximal, so a column mask gives ny = ky. Sampled lines adjacent to the calibration block
    count as part of it, as they do for fastMRI's ``VarNet`` sensitivity estimation.

    Args:
        mask: bool (ky, kx), True = sampled.

    Returns:
        (ny, nx) as Python ints; (0, 0) when the centre itself is not sampled.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be (ky, kx), got shape {tuple(mask.shape)}")
    ky, kx = mask.shape
    device = mask.device
    grown = mask.to(torch.uint8)[_growth_order(ky).to(device)][:, _growth_order(kx).to(device)]
    # full[i, j] == 1 iff the centred box of (i + 1) rows by (j + 1) columns is fully sampled:
    # the rows and columns are in growth order, so a running minimum along each axis does it.
    full = torch.cummin(torch.cummin(grown, dim=0).values, dim=1).values

    # Proportional growth: step k (1..m) is the box of ceil(k ky / m) by ceil(k kx / m).
    m = max(ky, kx)
    k = torch.arange(1, m + 1, device=device)
    diag = full[(k * ky + m - 1) // m - 1, (k * kx + m - 1) // m - 1]
    steps = int(torch.cummin(diag, dim=0).values.sum())
    if steps == 0:
        return (0, 0)
    nx = -(-steps * kx // m)
    ny = int(full[:, nx - 1].sum())  # full is monotone, so the count is the largest height
    nx = int(full[ny - 1, :].sum())
    return (ny, nx)
