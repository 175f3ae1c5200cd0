"""Sampling masks: fastMRI parity for the 1D kinds, reproducibility, density, centre, helpers."""

from __future__ import annotations

import pytest
import torch

from mribundles.physics.masks import (
    MASK_KINDS,
    calibration_size,
    equispaced_mask_1d,
    gaussian_mask_2d,
    make_mask,
    mask_from_kspace,
    poisson_mask_2d,
    random_mask_1d,
)

subsample = pytest.importorskip("fastmri.data.subsample")

PARITY_CASES = [
    # (shape (ky, kx), acceleration, center_fraction, seed)
    ((640, 368), 4, 0.08, 0),
    ((640, 368), 8, 0.04, 1),
    ((320, 320), 4, 0.08, 42),
    ((100, 37), 6, 0.1, 7),
    ((64, 51), 4, 0.08, (102, 105, 108, 101)),  # fastMRI's data modules seed with a tuple
]


def _fastmri_mask(mask_func_cls, shape, acc, cf, seed):
    """fastMRI's mask for a (ky, kx) slice, broadcast from its (1, 1, kx, 1) columns."""
    ky, kx = shape
    mask, _ = mask_func_cls([cf], [acc])((1, ky, kx, 2), seed=seed)
    return mask[0, 0, :, 0].bool().expand(ky, kx)


@pytest.mark.parametrize("shape,acc,cf,seed", PARITY_CASES)
def test_random_1d_matches_fastmri(shape, acc, cf, seed):
    expected = _fastmri_mask(subsample.RandomMaskFunc, shape, acc, cf, seed)
    assert torch.equal(random_mask_1d(shape, acc, cf, seed), expected)


@pytest.mark.parametrize("shape,acc,cf,seed", PARITY_CASES)
def test_equispaced_1d_matches_fastmri(shape, acc, cf, seed):
    expected = _fastmri_mask(subsample.EquispacedMaskFractionFunc, shape, acc, cf, seed)
    assert torch.equal(equispaced_mask_1d(shape, acc, cf, seed), expected)


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_dtype_shape_and_reproducibility(kind):
    a = make_mask(kind, (96, 80), 4, 0.08, seed=3)
    b = make_mask(kind, (96, 80), 4, 0.08, seed=3)
    assert a.dtype == torch.bool and a.shape == (96, 80)
    assert torch.equal(a, b)
    # Equispaced masks differ only in their offset, which two seeds may share: ask for a change
    # among a few seeds rather than between two.
    assert any(not torch.equal(a, make_mask(kind, (96, 80), 4, 0.08, seed=s)) for s in (4, 5, 6))


@pytest.mark.parametrize(
    "kind,tol",
    [("random1d", 0.04), ("equispaced1d", 0.01), ("poisson2d", 0.01), ("gaussian2d", 1e-9)],
)
@pytest.mark.parametrize("acc", [4, 8])
def test_sampled_fraction_close_to_one_over_acceleration(kind, tol, acc):
    mask = make_mask(kind, (256, 256), acc, 0.04, seed=0)
    assert abs(mask.float().mean().item() - 1 / acc) <= tol


def test_gaussian_has_exact_point_count():
    mask = gaussian_mask_2d((100, 90), 5, (10, 8), seed=1)
    assert int(mask.sum()) == round(100 * 90 / 5)


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_centre_fully_sampled(kind):
    ky, kx, cf = 128, 96, 0.1
    mask = make_mask(kind, (ky, kx), 4, cf, seed=5)
    ny, nx = round(ky * cf), round(kx * cf)
    y0, x0 = (ky - ny + 1) // 2, (kx - nx + 1) // 2
    if kind.endswith("1d"):
        assert mask[:, x0 : x0 + nx].all()
    else:
        assert mask[y0 : y0 + ny, x0 : x0 + nx].all()
    got_ny, got_nx = calibration_size(mask)
    assert got_nx >= nx and got_ny >= (ky if kind.endswith("1d") else ny)


def test_poisson_odd_calibration_box_found():
    mask = poisson_mask_2d((80, 81), 4, (13, 9), seed=2)
    ny, nx = calibration_size(mask)
    assert ny >= 13 and nx >= 9


@pytest.mark.parametrize("shape,acceleration,calib,seed", [((128, 128), 8, (10, 10), 0), ((230, 180), 4, (24, 24), 7),
                                                        ((96, 64), 12, (4, 4), 3)])
def test_poisson_masks_are_sigpys(shape, acceleration, calib, seed):
    """The bounded slope search returns sigpy.mri.poisson's own mask wherever sigpy returns."""
    import numpy as np
    import sigpy.mri

    from mribundles.physics.masks import _poisson_slope_search

    expected = sigpy.mri.poisson(shape, acceleration, calib=calib, dtype=np.float32, seed=seed) > 0
    assert np.array_equal(_poisson_slope_search(shape, acceleration, calib, seed), expected)


def test_poisson_mask_where_sigpys_search_never_ends():
    """A draw that hung a training run: on a 64 x 68 grid at R 9.05 with a 4 x 4 box no slope
    reaches the target within 0.1 for this seed, and sigpy 0.1.27's bisection repeats one slope
    forever. The search gives up on that seed (an alarm fails the test instead of hanging it)
    and the next seed's mask is within the tolerance."""
    import signal

    from mribundles.physics.masks import _poisson_slope_search

    def hung(signum, frame):
        raise TimeoutError("the Poisson-disc slope search did not end")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        with pytest.raises(ValueError, match="no density slope gives acceleration 9.04"):
            _poisson_slope_search((64, 68), 9.045686051275998, (4, 4), 1475626978)
        mask = poisson_mask_2d((64, 68), 9.045686051275998, (4, 4), seed=1475626978)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert mask.shape == (64, 68) and abs(mask.numel() / int(mask.sum()) - 9.045686051275998) < 0.1


def test_unknown_kind_lists_valid_kinds():
    with pytest.raises(ValueError, match="random1d.*equispaced1d.*poisson2d.*gaussian2d"):
        make_mask("radial", (32, 32), 4, 0.08, seed=0)


def test_calibration_size_known_masks():
    # Column mask: centre columns 6..9 of 16 (4 lines, fastMRI placement) plus two outer lines.
    cols = torch.zeros(16, dtype=torch.bool)
    cols[[0, 6, 7, 8, 9, 12]] = True
    assert calibration_size(cols.expand(10, 16)) == (10, 4)

    # 2D box of 4 x 6 around (5, 6) in a (10, 12) grid, plus an isolated sample far away.
    box = torch.zeros(10, 12, dtype=torch.bool)
    box[3:7, 3:9] = True
    box[0, 0] = True
    assert calibration_size(box) == (4, 6)

    # Odd box on an even grid: 3 lines out of 8 start at (8 - 3 + 1) // 2 = 3.
    odd = torch.zeros(8, 8, dtype=torch.bool)
    odd[3:6, 3:6] = True
    assert calibration_size(odd) == (3, 3)

    # Proportional growth first: a long thin strip through the centre does not win over the box.
    strip = box.clone()
    strip[4:6, :] = True
    assert calibration_size(strip) == (4, 6)

    # An adjacent sampled line extends the block it touches.
    wider = box.clone()
    wider[3:7, 9] = True
    assert calibration_size(wider) == (4, 7)

    assert calibration_size(torch.zeros(8, 8, dtype=torch.bool)) == (0, 0)
    assert calibration_size(torch.ones(7, 9, dtype=torch.bool)) == (7, 9)


def test_mask_from_kspace():
    gen = torch.Generator().manual_seed(0)
    full = torch.randn(4, 20, 24, dtype=torch.complex64, generator=gen) + 0.1  # no exact zeros
    mask = random_mask_1d((20, 24), 4, 0.1, seed=9)
    undersampled = full * mask
    assert torch.equal(mask_from_kspace(undersampled), mask)

    # A sample that only one coil holds still counts; leading (slice) dims are reduced too.
    mask2 = mask.clone()
    mask2[0, 0] = True
    undersampled[2, 0, 0] = 1 + 1j
    stacked = torch.stack([undersampled, torch.zeros_like(undersampled)])
    result = mask_from_kspace(stacked)
    assert result.dtype == torch.bool and result.shape == (20, 24)
    assert torch.equal(result, mask2)
