"""Physics core: centred FFTs, coil combination, the forward operator, sensitivity estimation,
the multi-coil simulator and the calibration region of a mask. Every test asserts on values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import mribundles
from mribundles.physics import (
    MultiCoilOperator,
    calibration_mask,
    calibration_size,
    coil_sensitivities,
    estimate_sensitivities,
    fft2c,
    ifft2c,
    make_mask,
    off_resonance_phase,
    rss,
    sens_expand,
    sens_reduce,
    simulate_multicoil_kspace,
    smooth_phase,
)

SIZES = [(16, 20), (15, 21), (9, 8)]  # even/even, odd/odd, odd/even


def _crandn(*shape: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.complex64)


def _inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """<a, b> = sum conj(a) b, in complex128."""
    return (a.conj().to(torch.complex128) * b.to(torch.complex128)).sum()


def _adjoint_gap(ax: torch.Tensor, y: torch.Tensor, x: torch.Tensor, ahy: torch.Tensor) -> float:
    """|<A x, y> - <x, A^H y>| relative to ||A x|| ||y||, the scale of either inner product (a
    ratio to |<A x, y>| itself would blow up when random vectors are nearly orthogonal)."""
    gap = abs(_inner(ax, y) - _inner(x, ahy))
    return (gap / (torch.linalg.vector_norm(ax.to(torch.complex128)) * torch.linalg.vector_norm(y.to(torch.complex128)))).item()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors gain nothing from intra-op threads, and on a busy machine each parallel
    region waits for a descheduled worker (seen: tiny passes hundreds of times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def brain_slice() -> torch.Tensor:
    """A real T1 axial slice (80, 112), float32, max about 0.9."""
    volume = np.load(mribundles.sample_data.path("voxelmorph_t1_axial_4slices_80x112.npy"))
    return torch.from_numpy(volume[1].copy())


# ----------------------------------------------------------------------------------------- fft


@pytest.mark.parametrize("shape", SIZES)
def test_fft_round_trip_and_parseval(shape):
    x = _crandn(3, *shape)
    k = fft2c(x)
    assert k.dtype == torch.complex64 and k.shape == x.shape
    torch.testing.assert_close(ifft2c(k), x, rtol=0, atol=1e-6)
    torch.testing.assert_close(fft2c(ifft2c(x)), x, rtol=0, atol=1e-6)
    # Unitary: ||F x|| = ||x||, and <F x, y> = <x, F^H y>.
    assert torch.linalg.vector_norm(k).item() == pytest.approx(torch.linalg.vector_norm(x).item(), rel=1e-6)
    y = _crandn(3, *shape, seed=1)
    assert _adjoint_gap(k, y, x, ifft2c(y)) < 1e-6


@pytest.mark.parametrize("shape", SIZES)
def test_fft_centring(shape):
    h, w = shape
    # A delta at the image centre (H//2, W//2) has flat, real k-space of magnitude 1/sqrt(HW).
    delta = torch.zeros(shape, dtype=torch.complex64)
    delta[h // 2, w // 2] = 1
    k = fft2c(delta)
    torch.testing.assert_close(k, torch.full(shape, 1 / math.sqrt(h * w), dtype=torch.complex64), rtol=0, atol=1e-7)
    # A constant image has all its energy at DC, index (ky//2, kx//2), of value c sqrt(HW).
    const = torch.full(shape, 2.5, dtype=torch.complex64)
    k = fft2c(const)
    expected = torch.zeros(shape, dtype=torch.complex64)
    expected[h // 2, w // 2] = 2.5 * math.sqrt(h * w)
    torch.testing.assert_close(k, expected, rtol=0, atol=1e-5)
    # ... and the inverse maps a DC-only k-space back to the constant.
    torch.testing.assert_close(ifft2c(expected), const, rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", SIZES)
def test_fft_matches_fastmri(shape):
    fastmri = pytest.importorskip("fastmri")
    x = _crandn(2, 4, *shape, seed=3)
    ours_k = fft2c(x)
    theirs_k = fastmri.fft2c(torch.view_as_real(x))  # fastMRI: stacked (..., H, W, 2)
    torch.testing.assert_close(torch.view_as_real(ours_k), theirs_k, rtol=0, atol=1e-6)
    ours_x = ifft2c(x)
    theirs_x = fastmri.ifft2c(torch.view_as_real(x))
    torch.testing.assert_close(torch.view_as_real(ours_x), theirs_x, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------------- coils


def test_rss_values():
    coils = torch.zeros(2, 3, 4, 5, dtype=torch.complex64)
    coils[:, 0] = 3
    coils[:, 1] = 4j
    out = rss(coils)
    assert out.shape == (2, 4, 5)
    torch.testing.assert_close(out, torch.full((2, 4, 5), 5.0))
    x = _crandn(4, 6, 7)
    torch.testing.assert_close(rss(x), torch.sqrt((x.real**2 + x.imag**2).sum(0)))


@pytest.mark.parametrize("batch", [(), (2,)])
def test_sens_expand_reduce_adjoint(batch):
    coils, h, w = 5, 12, 9
    x = _crandn(*batch, h, w, seed=1)
    y = _crandn(*batch, coils, h, w, seed=2)
    maps = _crandn(*batch, coils, h, w, seed=3)
    ex = sens_expand(x, maps)
    assert ex.shape == (*batch, coils, h, w)
    red = sens_reduce(y, maps)
    assert red.shape == (*batch, h, w)
    assert _adjoint_gap(ex, y, x, red) < 1e-5
    # With normalised maps, reduce(expand(x)) = x.
    unit = maps / rss(maps).unsqueeze(-3)
    torch.testing.assert_close(sens_reduce(sens_expand(x, unit), unit), x, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------ operator


@pytest.mark.parametrize("batch", [(), (3,)])
def test_operator_adjoint_and_normal(batch):
    coils, h, w = 4, 14, 11
    gen = torch.Generator().manual_seed(5)
    maps = _crandn(*batch, coils, h, w, seed=4)
    mask = torch.rand((*batch, h, w), generator=gen) < 0.4
    op = MultiCoilOperator(maps, mask)
    x = _crandn(*batch, h, w, seed=6)
    y = _crandn(*batch, coils, h, w, seed=7)
    ax = op(x)
    assert ax.shape == (*batch, coils, h, w)
    # Zero off the mask, for every coil.
    assert (ax.abs()[~mask.unsqueeze(-3).expand_as(ax)] == 0).all()
    assert _adjoint_gap(ax, y, x, op.adjoint(y)) < 1e-5
    lhs, rhs = _inner(ax, y), _inner(x, op.adjoint(y))
    assert abs(lhs - rhs) <= 1e-5 * abs(lhs)  # also relative to the product itself, for these seeds
    torch.testing.assert_close(op.normal(x), op.adjoint(op.forward(x)), rtol=0, atol=0)
    # A^H A is Hermitian positive semi-definite: <x, A^H A x> = ||A x||^2, real.
    quad = _inner(x, op.normal(x))
    assert abs(quad.imag) <= 1e-5 * abs(quad.real)
    assert quad.real.item() == pytest.approx(torch.linalg.vector_norm(ax).item() ** 2, rel=1e-5)


def test_operator_broadcasts_single_mask_over_batch():
    maps = _crandn(2, 3, 8, 8, seed=1)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[:, ::2] = True
    x = _crandn(2, 8, 8, seed=2)
    batched = MultiCoilOperator(maps, mask.expand(2, 8, 8))(x)
    torch.testing.assert_close(MultiCoilOperator(maps, mask)(x), batched, rtol=0, atol=0)
    torch.testing.assert_close(MultiCoilOperator(maps, mask.float())(x), batched, rtol=0, atol=0)


# ------------------------------------------------------------------------ sensitivity estimation


def test_estimate_sensitivities_on_simulated_brain(brain_slice):
    kspace, true_maps = simulate_multicoil_kspace(brain_slice, num_coils=8, snr_db=None, seed=0)
    est = estimate_sensitivities(kspace, (24, 24))
    assert est.shape == true_maps.shape and est.dtype == torch.complex64
    power = (est.abs() ** 2).sum(0)
    support = power > 0
    # Unit root-sum-of-squares on the support, exactly zero outside.
    torch.testing.assert_close(power[support], torch.ones(int(support.sum())), rtol=0, atol=1e-5)
    reference = rss(ifft2c(kspace))
    obj = reference > 0.1 * reference.max()
    assert support[obj].all(), "the object must lie inside the estimated support"
    sense = sens_reduce(kspace, est).abs()
    error = (sense - reference)[obj]
    # Measured: 3.0e-4 relative L2 and 1.5e-3 worst pixel for a 24x24 calibration block (1.0e-3
    # and 3.2e-3 for 16x16). The residual is the low-resolution estimate's blur of the smooth maps
    # and phase; the bounds leave a factor of about 3 for other BLAS/FFT back ends.
    assert (error.norm() / reference[obj].norm()).item() < 1e-3
    assert (error.abs() / reference[obj]).max().item() < 5e-3


# ---------------------------------------------------------------------------------- simulation


def test_simulate_shapes_and_normalisation(brain_slice):
    kspace, maps = simulate_multicoil_kspace(brain_slice, num_coils=6, snr_db=30.0, seed=1)
    assert kspace.shape == (6, 80, 112) and maps.shape == (6, 80, 112)
    assert kspace.dtype == torch.complex64 and maps.dtype == torch.complex64
    torch.testing.assert_close((maps.abs() ** 2).sum(0), torch.ones(80, 112), rtol=0, atol=1e-5)
    standalone = coil_sensitivities(6, (80, 112))
    torch.testing.assert_close(standalone, maps, rtol=0, atol=0)
    # Noise-free: the RSS of the coil images is the input image (the phase has unit magnitude).
    clean, _ = simulate_multicoil_kspace(brain_slice, num_coils=6, snr_db=None, seed=1)
    torch.testing.assert_close(rss(ifft2c(clean)), brain_slice, rtol=0, atol=1e-5)


@pytest.mark.parametrize("snr_db", [10.0, 30.0])
def test_simulate_noise_at_requested_snr(brain_slice, snr_db):
    noisy, _ = simulate_multicoil_kspace(brain_slice, num_coils=8, snr_db=snr_db, seed=2)
    clean, _ = simulate_multicoil_kspace(brain_slice, num_coils=8, snr_db=None, seed=2)
    noise = (noisy - clean).to(torch.complex128)
    measured = 10 * math.log10(((clean.abs().double() ** 2).mean() / (noise.abs() ** 2).mean()).item())
    assert abs(measured - snr_db) < 0.2
    # Circular noise: real and imaginary halves carry equal power.
    ratio = (noise.real**2).mean() / (noise.imag**2).mean()
    assert ratio.item() == pytest.approx(1.0, abs=0.05)


def test_smooth_phase_unit_magnitude():
    phase = smooth_phase((33, 40), torch.Generator().manual_seed(0))
    assert phase.shape == (33, 40) and phase.dtype == torch.complex64
    torch.testing.assert_close(phase.abs(), torch.ones(33, 40), rtol=0, atol=1e-6)
    assert phase.angle().std() > 0.05  # not a constant


def test_off_resonance_phase_has_the_drawn_spread_and_scale():
    """Unit magnitude, the requested standard deviation, and a phase that turns faster where the
    correlation length is shorter (in mm, so the pixel size counts), reproducibly per seed."""
    def phase(correlation_mm, pixel_mm=(1.0, 1.0), seed=0):
        return off_resonance_phase((96, 80), pixel_mm, torch.Generator().manual_seed(seed), 2.0, correlation_mm)

    def mean_step(p):
        return float(torch.angle(p[1:] * p[:-1].conj()).abs().mean())

    fine, coarse = phase(8.0), phase(40.0)
    assert fine.shape == (96, 80) and fine.dtype == torch.complex64
    torch.testing.assert_close(fine.abs(), torch.ones(96, 80), rtol=0, atol=1e-6)
    small = off_resonance_phase((96, 80), (1.0, 1.0), torch.Generator().manual_seed(0), 0.5, 20.0)
    assert float(small.angle().std()) == pytest.approx(0.5, abs=1e-3)  # within +-pi: no wrapping
    assert mean_step(fine) > 3 * mean_step(coarse)
    assert mean_step(phase(8.0, pixel_mm=(2.0, 2.0))) > 1.5 * mean_step(fine)  # 8 mm is 4 pixels of 2 mm
    assert torch.equal(fine, phase(8.0)) and not torch.equal(fine, phase(8.0, seed=1))


def test_simulate_reproducible(brain_slice):
    a, _ = simulate_multicoil_kspace(brain_slice, num_coils=4, seed=3)
    b, _ = simulate_multicoil_kspace(brain_slice, num_coils=4, seed=3)
    c, _ = simulate_multicoil_kspace(brain_slice, num_coils=4, seed=4)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3 * a.abs().max()


@pytest.mark.parametrize(
    "image",
    [torch.ones(8, 8, dtype=torch.complex64), torch.ones(2, 8, 8), torch.ones(8)],
    ids=["complex", "3d", "1d"],
)
def test_simulate_rejects_bad_input(image):
    with pytest.raises(ValueError, match="real \\(H, W\\) image"):
        simulate_multicoil_kspace(image)


# --------------------------------------------------------------------------------- calibration


def _box(ky: int, kx: int, rows: slice, cols: slice) -> torch.Tensor:
    box = torch.zeros(ky, kx, dtype=torch.bool)
    box[rows, cols] = True
    return box


def test_calibration_mask_column_mask():
    ky, kx = 20, 32
    mask = torch.zeros(ky, kx, dtype=torch.bool)
    mask[:, 13:19] = True  # centre block around kx//2 = 16
    mask[:, [2, 5, 9, 24, 29]] = True  # separated by at least one gap
    torch.testing.assert_close(calibration_mask(mask), _box(ky, kx, slice(None), slice(13, 19)), rtol=0, atol=0)


def test_calibration_mask_square_plus_scattered_points():
    ky, kx = 64, 70
    gen = torch.Generator().manual_seed(0)
    mask = torch.rand(ky, kx, generator=gen) < 0.15
    square = _box(ky, kx, slice(20, 44), slice(23, 47))  # 24 x 24, contains (32, 35)
    mask |= square
    box = calibration_mask(mask)
    assert box[square].all(), "the box covers the calibration square"
    # ... and lies within the contiguous runs through the centre along the centre row and column.
    row, col = mask[ky // 2], mask[:, kx // 2]
    x0, x1 = kx // 2, kx // 2
    while x0 > 0 and row[x0 - 1]:
        x0 -= 1
    while x1 < kx - 1 and row[x1 + 1]:
        x1 += 1
    y0, y1 = ky // 2, ky // 2
    while y0 > 0 and col[y0 - 1]:
        y0 -= 1
    while y1 < ky - 1 and col[y1 + 1]:
        y1 += 1
    torch.testing.assert_close(box, _box(ky, kx, slice(y0, y1 + 1), slice(x0, x1 + 1)), rtol=0, atol=0)
    # With nothing touching the square the box is exactly the square.
    clean = square | _box(ky, kx, slice(5, 6), slice(5, 6))
    torch.testing.assert_close(calibration_mask(clean), square, rtol=0, atol=0)


def test_calibration_mask_batch_and_empty_centre():
    a = torch.zeros(16, 16, dtype=torch.bool)
    a[:, 6:11] = True
    b = _box(16, 16, slice(5, 12), slice(4, 12))
    c = torch.ones(16, 16, dtype=torch.bool)
    c[8, 8] = False  # centre not sampled: no calibration region
    batch = torch.stack([a, b, c])
    out = calibration_mask(batch)
    assert out.shape == (3, 16, 16)
    for i in range(3):
        torch.testing.assert_close(out[i], calibration_mask(batch[i]), rtol=0, atol=0)
    torch.testing.assert_close(out[0], a, rtol=0, atol=0)
    torch.testing.assert_close(out[1], b, rtol=0, atol=0)
    assert not out[2].any()


def _box_extent(box: torch.Tensor) -> tuple[int, int]:
    return int(box.any(1).sum()), int(box.any(0).sum())


@pytest.mark.parametrize("seed", range(6))
def test_calibration_mask_agrees_with_calibration_size_random1d(seed):
    """On column masks both find all ky rows; along kx `calibration_size` keeps fastMRI's centred
    placement (n lines from (N - n + 1) // 2), so it stops where the contiguous run becomes
    lopsided, while `calibration_mask` takes the whole run. They coincide exactly when the run
    is fastMRI-centred, and the size's box always lies inside the mask's box."""
    mask = make_mask("random1d", (48, 80), 4, 0.08, seed)
    box = calibration_mask(mask)
    ny, nx = calibration_size(mask)
    run_y, run_x = _box_extent(box)
    assert run_y == ny == 48
    start = (80 - nx + 1) // 2
    assert box[:, start : start + nx].all()
    cols = torch.nonzero(box[0]).flatten()
    centred = int(cols[0]) == (80 - run_x + 1) // 2
    assert (run_x == nx) == centred


@pytest.mark.parametrize("seed", range(4))
def test_calibration_mask_contains_calibration_size_poisson2d(seed):
    """On Poisson-disc masks the definitions do not coincide: `calibration_size` gives the largest
    fully sampled centred box, `calibration_mask` the cross of the sampled runs through the centre
    along its row and column, which extends past the calibration square wherever random samples
    touch it (and can then hold unsampled points). What holds is containment."""
    mask = make_mask("poisson2d", (64, 80), 4, 0.15, seed)
    box = calibration_mask(mask)
    ny, nx = calibration_size(mask)
    sy, sx = (64 - ny + 1) // 2, (80 - nx + 1) // 2
    assert ny >= round(64 * 0.15) and nx >= round(80 * 0.15)
    assert box[sy : sy + ny, sx : sx + nx].all()
    run_y, run_x = _box_extent(box)
    assert run_y >= ny and run_x >= nx
    # The box's centre row and column are fully sampled, by construction.
    assert mask[64 // 2][box[64 // 2]].all() and mask[:, 80 // 2][box[:, 80 // 2]].all()
