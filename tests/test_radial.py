"""Radial sampling: golden-angle trajectories, density compensation and the NUFFT operator,
checked against the direct non-uniform DFT and on a real brain slice."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mribundles.metrics import psnr
from mribundles.physics.fft import fft2c
from mribundles.physics.radial import (
    GOLDEN_ANGLE,
    RadialMultiCoilOperator,
    density_compensation,
    golden_angle_trajectory,
    simulate_radial_kspace,
)
from mribundles.physics.simulate import coil_sensitivities
from mribundles.sample_data import path as sample_path


@pytest.fixture(scope="module")
def brain_slice() -> torch.Tensor:
    """A real axial T1 slice (voxelmorph subject), 80 x 112, in [0, 1]."""
    return torch.from_numpy(np.load(sample_path("voxelmorph_t1_axial_4slices_80x112.npy"))[1]).float()


def _ndft(image: torch.Tensor, trajectory: torch.Tensor) -> torch.Tensor:
    """The direct non-uniform DFT: sum_r x[r] exp(-i k . (r - N//2)) / sqrt(H W), in float64."""
    h, w = image.shape
    ry, rx = torch.arange(h) - h // 2, torch.arange(w) - w // 2
    ky, kx = trajectory.double()
    phase = ky[:, None, None] * ry[None, :, None] + kx[:, None, None] * rx[None, None, :]
    return (image.to(torch.complex128)[None] * torch.exp(-1j * phase)).sum((1, 2)) / math.sqrt(h * w)


def test_golden_angle_spokes_cross_the_centre_a_golden_angle_apart():
    trajectory = golden_angle_trajectory(5, 16, first_spoke=3)
    assert trajectory.shape == (2, 80) and trajectory.dtype == torch.float32
    spokes = trajectory.reshape(2, 5, 16)
    assert torch.all(spokes[:, :, 8] == 0)  # sample readout // 2 is the centre of k-space
    assert trajectory.min() >= -math.pi and trajectory.max() < math.pi
    # Spoke p points along angle (3 + p) x the golden angle: its last sample lies at radius 7 dk.
    theta = (3 + torch.arange(5, dtype=torch.float64)) * GOLDEN_ANGLE
    direction = torch.stack([torch.sin(theta), torch.cos(theta)]) * 7 * (2 * math.pi / 16)
    assert torch.allclose(spokes[:, :, -1].double(), direction, atol=1e-6)
    assert math.degrees(GOLDEN_ANGLE) == pytest.approx(111.246, abs=1e-3)


def test_nufft_matches_the_direct_non_uniform_dft():
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(16, 12, dtype=torch.complex64, generator=generator)
    trajectory = golden_angle_trajectory(8, 16)
    kspace = RadialMultiCoilOperator(torch.ones(1, 16, 12, dtype=torch.complex64), trajectory).forward(image)[0]
    reference = _ndft(image, trajectory)
    assert (kspace - reference).norm() / reference.norm() < 2e-3


def test_nufft_on_the_cartesian_grid_is_the_centred_unitary_fft():
    image = torch.randn(16, 12, dtype=torch.complex64, generator=torch.Generator().manual_seed(1))
    ky, kx = torch.meshgrid((torch.arange(16) - 8) * 2 * math.pi / 16, (torch.arange(12) - 6) * 2 * math.pi / 12, indexing="ij")
    grid = torch.stack([ky.reshape(-1), kx.reshape(-1)]).float()
    kspace = RadialMultiCoilOperator(torch.ones(1, 16, 12, dtype=torch.complex64), grid).forward(image)[0]
    assert torch.allclose(kspace, fft2c(image).reshape(-1), atol=1e-4 * fft2c(image).abs().max().item())


def test_multicoil_operator_is_adjoint_in_batches():
    generator = torch.Generator().manual_seed(2)
    maps = coil_sensitivities(4, (20, 24))
    operator = RadialMultiCoilOperator(maps, golden_angle_trajectory(10, 24))
    x = torch.randn(3, 20, 24, dtype=torch.complex64, generator=generator)
    y = torch.randn(3, 4, operator.num_samples, dtype=torch.complex64, generator=generator)
    assert operator.forward(x).shape == y.shape and operator.adjoint(y).shape == x.shape
    lhs = torch.vdot(operator.forward(x).reshape(-1), y.reshape(-1))
    rhs = torch.vdot(x.reshape(-1), operator.adjoint(y).reshape(-1))
    assert abs(lhs - rhs) / abs(lhs) < 1e-5
    # Each slice of the batch is its own problem.
    assert torch.allclose(operator.forward(x)[1], operator.forward(x[1]), atol=1e-5)


def test_kspace_of_the_wrong_length_is_refused():
    operator = RadialMultiCoilOperator(torch.ones(2, 8, 8, dtype=torch.complex64), golden_angle_trajectory(4, 8))
    with pytest.raises(ValueError, match="k-space has 30 samples per coil, the trajectory 32"):
        operator.adjoint(torch.zeros(2, 30, dtype=torch.complex64))


def test_density_compensated_gridding_has_unit_gain_and_sharpens_with_spokes(brain_slice):
    """Gridding of a real brain slice: at Nyquist (pi/2 x 112 = 176 spokes, readout 2x
    oversampled) it reproduces the image without any fitted scale; fewer spokes streak."""
    scores = {}
    for spokes in (176, 64, 32):
        trajectory = golden_angle_trajectory(spokes, 224)
        kspace, maps = simulate_radial_kspace(brain_slice, trajectory, num_coils=4, snr_db=None)
        gridded = RadialMultiCoilOperator(maps, trajectory).adjoint(kspace * density_compensation(spokes, 224, (80, 112))).abs()
        gain = float((gridded * brain_slice).sum() / (brain_slice * brain_slice).sum())
        assert gain == pytest.approx(1.0, abs=0.03)
        scores[spokes] = psnr(brain_slice.numpy(), gridded.numpy(), float(brain_slice.max()))
    assert scores[176] > 37 and scores[176] > scores[64] + 4 > scores[32] + 8


def test_radial_simulation_is_seeded_and_noisy_at_the_chosen_snr(brain_slice):
    trajectory = golden_angle_trajectory(32, 224)
    clean, maps = simulate_radial_kspace(brain_slice, trajectory, num_coils=4, snr_db=None, seed=5)
    noisy, _ = simulate_radial_kspace(brain_slice, trajectory, num_coils=4, snr_db=20.0, seed=5)
    again, _ = simulate_radial_kspace(brain_slice, trajectory, num_coils=4, snr_db=20.0, seed=5)
    assert clean.shape == (4, 32 * 224) and maps.shape == (4, 80, 112)
    assert torch.equal(noisy, again)
    snr = 10 * math.log10(float((clean.abs() ** 2).mean() / ((noisy - clean).abs() ** 2).mean()))
    assert snr == pytest.approx(20.0, abs=0.3)
    with pytest.raises(ValueError, match="real"):
        simulate_radial_kspace(brain_slice.to(torch.complex64), trajectory)


def test_radial_file_round_trip_and_transforms_keep_the_first_spokes(brain_slice, tmp_path):
    from mribundles.errors import InvalidInputError
    from mribundles.io.radial import read_radial_slice, write_radial
    from mribundles.transforms import GridRadiald, LoadRadialKspaced, SelectSpokesd

    image = torch.zeros(112, 112)
    image[16:96] = brain_slice
    trajectory = golden_angle_trajectory(48, 224)
    kspace, _ = simulate_radial_kspace(image, trajectory, num_coils=4, snr_db=None)
    path = tmp_path / "radial.h5"
    write_radial(path, kspace.reshape(1, 4, 48, 224), trajectory.reshape(2, 48, 224), reconstruction_rss=image[None])
    loaded, loaded_trajectory, reference = read_radial_slice(path, 0, reference=True)
    assert torch.equal(loaded.reshape(4, -1), kspace) and torch.equal(loaded_trajectory.reshape(2, -1), trajectory)
    assert torch.equal(reference, image)

    item = LoadRadialKspaced(reference_key="target")({"kspace": str(path), "slice": 0})
    item = SelectSpokesd(spokes=32)(item)
    # The first 32 spokes of a 48-spoke golden-angle file are a 32-spoke golden-angle acquisition.
    assert torch.equal(item["trajectory"].reshape(2, -1), golden_angle_trajectory(32, 224))
    assert torch.equal(item["kspace"], loaded[:, :32])
    gridded = GridRadiald()(item)["zero_filled"]
    assert gridded.shape == (1, 112, 112)
    assert psnr(image.numpy(), gridded[0].numpy(), float(image.max())) > 20  # 32 spokes stream, but the brain is there
    assert item["target"].shape == (1, 112, 112) and item["kspace_meta_dict"] == {"filename_or_obj": str(path), "slice": 0}
    with pytest.raises(InvalidInputError, match="slice 3 out of range: the file holds 1"):
        read_radial_slice(path, 3)
