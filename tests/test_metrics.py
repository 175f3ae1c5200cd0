"""NMSE, PSNR and SSIM give fastMRI's numbers (fastmri/evaluate.py) on the same arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

fastmri_evaluate = pytest.importorskip("fastmri.evaluate")

from mribundles.metrics import nmse, psnr, ssim  # noqa: E402


def _random_pair(shape, seed):
    rng = np.random.default_rng(seed)
    gt = rng.random(shape)
    return gt, gt + 0.05 * rng.standard_normal(shape)


def _structured_pair(shape, seed):
    """A smooth phantom-like image (disc + gradient) and a blurred, noisy version of it."""
    rng = np.random.default_rng(seed)
    s, h, w = shape
    y, x = np.mgrid[:h, :w]
    disc = ((y - h / 2) ** 2 + (x - w / 2) ** 2 < (min(h, w) / 3) ** 2).astype(float)
    gt = np.stack([(k + 1) * disc + x / w for k in range(s)])
    pred = 0.5 * (gt + np.roll(gt, 1, axis=-1)) + 0.01 * rng.standard_normal(shape)
    return gt * 1e-4, pred * 1e-4  # fastMRI magnitudes are ~1e-4: scale must not matter


PAIRS = [
    _random_pair((3, 64, 80), 0),
    _random_pair((1, 320, 320), 1),
    _random_pair((2, 37, 50), 2),
    _structured_pair((4, 96, 72), 3),
    _structured_pair((1, 320, 320), 4),
]


@pytest.mark.parametrize("gt,pred", PAIRS)
def test_nmse_matches_fastmri(gt, pred):
    assert nmse(gt, pred) == pytest.approx(float(fastmri_evaluate.nmse(gt, pred)), rel=1e-6)


@pytest.mark.parametrize("gt,pred", PAIRS)
@pytest.mark.parametrize("maxval", [None, 2.5e-4, 3.0])
def test_psnr_matches_fastmri(gt, pred, maxval):
    ref = float(fastmri_evaluate.psnr(gt, pred, maxval=maxval))
    assert psnr(gt, pred, maxval=maxval) == pytest.approx(ref, abs=1e-6)


@pytest.mark.parametrize("gt,pred", PAIRS)
@pytest.mark.parametrize("maxval", [None, 2.5e-4, 3.0])
def test_ssim_matches_fastmri(gt, pred, maxval):
    ref = float(np.squeeze(fastmri_evaluate.ssim(gt, pred, maxval=maxval)))
    assert ssim(gt, pred, maxval=maxval) == pytest.approx(ref, abs=1e-6)


def test_float32_tensors_match_fastmri_on_numpy():
    gt, pred = _random_pair((2, 64, 64), 5)
    gt32, pred32 = gt.astype(np.float32), pred.astype(np.float32)
    gt_t, pred_t = torch.from_numpy(gt32), torch.from_numpy(pred32)
    assert nmse(gt_t, pred_t) == pytest.approx(float(fastmri_evaluate.nmse(gt32, pred32)), abs=1e-6)
    assert psnr(gt_t, pred_t) == pytest.approx(float(fastmri_evaluate.psnr(gt32, pred32)), abs=1e-5)
    ssim_ref = float(np.squeeze(fastmri_evaluate.ssim(gt32, pred32)))
    assert ssim(gt_t, pred_t) == pytest.approx(ssim_ref, abs=1e-6)


def test_2d_input_is_one_slice():
    gt, pred = _random_pair((1, 48, 48), 6)
    for metric in (nmse, psnr, ssim):
        assert metric(gt[0], pred[0]) == pytest.approx(metric(gt, pred), rel=1e-12)


def test_returns_python_floats():
    gt, pred = _random_pair((1, 32, 32), 7)
    for metric in (nmse, psnr, ssim):
        assert type(metric(torch.from_numpy(gt), torch.from_numpy(pred))) is float


def test_identical_volumes():
    gt, _ = _random_pair((2, 40, 40), 8)
    assert nmse(gt, gt) == 0.0
    assert ssim(gt, gt) == pytest.approx(1.0, abs=1e-12)
    assert math.isinf(psnr(gt, gt))


def test_constant_offset_gives_analytic_psnr():
    gt, _ = _random_pair((2, 40, 40), 9)
    offset = 0.1
    expected = 10 * math.log10(gt.max() ** 2 / offset**2)
    assert psnr(gt, gt + offset) == pytest.approx(expected, abs=1e-9)
    assert psnr(gt, gt + offset, maxval=1.0) == pytest.approx(20.0, abs=1e-9)


def test_nmse_of_scaled_prediction():
    gt, _ = _random_pair((1, 16, 16), 10)
    assert nmse(gt, 0.9 * gt) == pytest.approx(0.01, rel=1e-12)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        nmse(np.zeros((2, 8, 8)), np.zeros((2, 8, 9)))


@pytest.mark.parametrize("metric", [nmse, psnr, ssim])
def test_nan_raises(metric):
    gt, pred = _random_pair((1, 16, 16), 11)
    pred[0, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        metric(gt, pred)


def test_complex_input_raises():
    x = torch.ones(1, 16, 16, dtype=torch.complex64)
    with pytest.raises(ValueError, match="magnitude"):
        ssim(x, x)


def test_ssim_too_small_raises():
    with pytest.raises(ValueError, match="at least 7x7"):
        ssim(np.ones((1, 6, 20)), np.ones((1, 6, 20)))
