"""The training data engine (mribundles.synth): seeded, shapes, coil counts, label synthesis,
the loop-coil physics, and its output compared with real raw k-space."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import torch

from mribundles.errors import InvalidInputError
from mribundles.physics.coil_loops import loop_sensitivities, plane_points
from mribundles.physics.fft import ifft2c
from mribundles.physics.simulate import simulate_multicoil_kspace
from mribundles.sample_data import path as sample_path
from mribundles.synth import (
    AcquisitionRanges,
    SyntheticKspaceDataset,
    correlated_noise,
    load_label_map,
    random_coil_array,
    sample,
    simulate_acquisition,
    sulcal_csf,
    synthesize_image,
    tissue_labels,
    warp_grid,
)
from mribundles.synth.realism import kspace_statistics

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def label_map() -> torch.Tensor:
    labels, _ = load_label_map(sample_path("synthseg_training_seg_01.nii.gz"))
    return labels


# --- physics --------------------------------------------------------------------------------

def test_loop_field_on_its_axis_matches_the_analytic_formula():
    """On a loop's axis the field is along the axis, 2 pi R^2 / (R^2 + d^2)^(3/2) (mu0 I / 4 pi = 1)."""
    radius = 30.0
    distances = torch.tensor([0.0, 10.0, 40.0, 100.0])
    # A loop in the y-z plane at x = -100 mm facing +x: its axis runs along x through the origin.
    points = torch.stack([distances - 100.0, torch.zeros(4), torch.zeros(4)], dim=-1)
    maps = loop_sensitivities(points, torch.tensor([[-100.0, 0, 0]]), torch.tensor([[1.0, 0, 0]]), torch.tensor([radius]), segments=256)
    expected = 2 * math.pi * radius**2 / (radius**2 + distances**2) ** 1.5
    assert torch.allclose(maps[0].real.abs(), expected, rtol=1e-3)
    assert torch.allclose(maps[0].imag, torch.zeros(4), atol=1e-6 * float(expected.max()))


@pytest.mark.parametrize("num_coils", [4, 8, 12, 16, 20, 32])
def test_coil_array_has_the_asked_number_of_loops_around_the_head(num_coils):
    centres, normals, radii = random_coil_array(num_coils, torch.Generator().manual_seed(num_coils))
    assert centres.shape == (num_coils, 3) and normals.shape == (num_coils, 3) and radii.shape == (num_coils,)
    in_plane = centres[:, :2].norm(dim=-1)
    assert bool((in_plane >= 80).all() and (in_plane <= 131).all() and (radii >= 20).all() and (radii <= 45).all())
    maps = loop_sensitivities(plane_points((32, 32), (6.0, 6.0)), centres, normals, radii)
    assert maps.shape == (num_coils, 32, 32) and torch.isfinite(torch.view_as_real(maps)).all()
    # Each coil sees most strongly the side of the head it sits on.
    for c in range(num_coils):
        peak = torch.tensor(np.unravel_index(int(maps[c].abs().argmax()), (32, 32)), dtype=torch.float32)
        position = (peak - 15.5) * 6.0  # (row = y, column = x) in mm
        direction = centres[c, [1, 0]]
        assert float(position @ direction) > 0


def test_correlated_noise_has_unit_variance_and_the_drawn_correlation():
    generator = torch.Generator().manual_seed(0)
    noise = correlated_noise((8, 200, 200), generator, max_correlation=0.5)
    flat = noise.reshape(8, -1)
    covariance = flat @ flat.conj().T / flat.shape[1]
    assert abs(float(covariance.diagonal().real.mean()) - 1) < 0.02
    off = covariance - torch.diag(covariance.diagonal())
    assert float(off.abs().max()) > 0.05  # coils share noise, as real arrays do
    uncorrelated = correlated_noise((8, 200, 200), torch.Generator().manual_seed(0), max_correlation=0.0).reshape(8, -1)
    assert float((uncorrelated @ uncorrelated.conj().T / flat.shape[1] - torch.eye(8)).abs().max()) < 0.02


def test_identity_warp_returns_the_image():
    image = torch.rand(24, 30)
    grid = warp_grid((24, 30), (1.0, 1.0), (24, 30), (1.0, 1.0), torch.eye(2))
    assert torch.allclose(sample(image, grid), image, atol=1e-5)
    # Half the pixels at twice the size cover the same field of view.
    coarse = sample(image, warp_grid((12, 15), (2.0, 2.0), (24, 30), (1.0, 1.0), torch.eye(2)))
    assert torch.allclose(coarse, image.reshape(12, 2, 15, 2).mean((1, 3)), atol=1e-5)


# --- label maps -----------------------------------------------------------------------------

def test_synthesis_is_piecewise_constant_per_label_without_artefacts(label_map):
    plane = label_map[:, 128, :].to(torch.int64)
    image = synthesize_image(plane, torch.Generator().manual_seed(0), contrast="t1", blur_range=(0, 0),
                             bias_std=0, gamma_std=0, texture_range=(0, 0))
    assert image.shape == plane.shape and float(image.max()) == pytest.approx(1.0)
    assert float(image[plane == 0].abs().max()) == 0  # air stays zero
    for value in torch.unique(plane):
        region = image[plane == value]
        assert float(region.max() - region.min()) < 1e-6
    # T1 preset: white matter brighter than grey matter brighter than CSF.
    tissue = tissue_labels(plane)
    csf, gm, wm = (float(image[tissue == t].mean()) for t in (1, 2, 3))
    assert csf < gm < wm


def test_synthesis_is_seeded_and_varies_with_the_seed(label_map):
    plane = label_map[:, :, 128].to(torch.int64)
    a = synthesize_image(plane, torch.Generator().manual_seed(5))
    b = synthesize_image(plane, torch.Generator().manual_seed(5))
    c = synthesize_image(plane, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    volume = synthesize_image(label_map[96:160, 96:160, 96:160].to(torch.int64), torch.Generator().manual_seed(1))
    assert volume.shape == (64, 64, 64) and 0 <= float(volume.min()) and float(volume.max()) <= 1


def test_tissue_mapping_follows_fast_and_spm(label_map):
    tissue = tissue_labels(label_map)
    assert set(torch.unique(tissue).tolist()) == {0, 1, 2, 3}
    assert int(tissue[label_map == 24].unique()) == 1  # sulcal CSF is CSF
    assert int(tissue[label_map == 10].unique()) == 2  # thalamus is grey matter
    assert int(tissue[label_map == 16].unique()) == 3  # brain stem is white matter
    assert int(tissue[label_map >= 500].max()) == 0  # scalp, skull, fat, eyes: not brain tissue


def test_sulcal_csf_fills_the_gaps_between_gyri_but_not_the_outside():
    # two "gyri" of grey matter, 2 voxels apart, on an otherwise empty grid: an aseg without sulci
    tissue = torch.zeros(12, 12, 12, dtype=torch.uint8)
    tissue[3:9, 3:9, 2:5] = 2
    tissue[3:9, 3:9, 7:10] = 2
    filled = sulcal_csf(tissue, radius=2)
    assert torch.equal(filled[3:9, 3:9, 5:7], torch.ones(6, 6, 2, dtype=torch.uint8))  # the sulcus
    assert int((filled == 1).sum()) == 6 * 6 * 2  # nothing outside the closing
    assert torch.equal(filled[tissue > 0], tissue[tissue > 0])  # labelled tissue kept


@pytest.mark.parametrize(
    "data, problem",
    [
        (np.zeros((8, 8), np.int16), "must be 3D"),
        (np.zeros((8, 8, 8), np.int16), "empty"),
        (np.full((8, 8, 8), 999, np.int16), "labels the tissue mapping does not know: [999]"),
        (np.full((8, 8, 8), 2.5, np.float32), "non-integer"),
    ],
)
def test_bad_label_maps_are_refused_naming_the_file(tmp_path, data, problem):
    path = tmp_path / "bad_labels.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    with pytest.raises(InvalidInputError, match=problem.replace("[", r"\[").replace("]", r"\]")) as raised:
        load_label_map(path)
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)


def test_label_map_must_match_its_image_grid(tmp_path):
    path = tmp_path / "labels.nii.gz"
    nib.save(nib.Nifti1Image(np.full((8, 8, 8), 2, np.int16), np.eye(4)), path)
    with pytest.raises(InvalidInputError, match=r"grid \(8, 8, 8\) does not match its image \(8, 8, 9\)"):
        load_label_map(path, image_shape=(8, 8, 9))


# --- acquisitions and the dataset -----------------------------------------------------------

def test_dataset_is_seeded_fresh_per_draw_and_fixed_for_validation(tiny_synth_root):
    ranges = {"phase_encodes": [48, 96], "max_pixels": 96 * 96}
    a, b = (SyntheticKspaceDataset(tiny_synth_root, 4, seed=3, acquisition=ranges) for _ in range(2))
    first = a[0]["kspace"]
    assert torch.equal(first, b[0]["kspace"])  # same seed, same draw
    assert not torch.equal(first, a[0]["kspace"])  # the same index drawn again is a new example
    assert not torch.equal(first, a[1]["kspace"])
    val = SyntheticKspaceDataset(tiny_synth_root, 4, seed=3, fresh=False, acquisition=ranges)
    assert torch.equal(val[2]["kspace"], val[2]["kspace"])
    meta = val[2]["kspace_meta_dict"]
    assert meta["filename_or_obj"].startswith("simulated: synthesised") and "training_seg_01" in meta["filename_or_obj"]


def test_acquisitions_cover_the_drawn_ranges(tiny_synth_root):
    ranges = AcquisitionRanges(coils=(4, 12, 32), phase_encodes=(48, 96), max_pixels=96 * 96)
    dataset = SyntheticKspaceDataset(tiny_synth_root, 24, seed=0, acquisition=ranges)
    coils, oversampled = set(), 0
    for i in range(24):
        item = dataset[i]
        kspace = item["kspace"]
        assert kspace.dtype == torch.complex64 and kspace.ndim == 3 and torch.isfinite(torch.view_as_real(kspace)).all()
        c, ro, pe = kspace.shape
        assert ro % 2 == 0 and pe % 2 == 0 and 40 <= pe <= 96 and ro * pe <= 2 * 96 * 96 + 8
        coils.add(c)
        oversampled += item["kspace_meta_dict"]["readout_oversampling"] == "2"
    assert coils == {4, 12, 32} and 0 < oversampled < 24


def test_oversampled_readout_leaves_the_outer_half_empty_but_for_noise():
    image = torch.zeros(64, 64)
    image[8:56, 8:56] = 1.0
    ranges = AcquisitionRanges(coils=(8,), phase_encodes=(64, 64), readout_aspect=(1, 1), readout_oversampling=1.0,
                               fov_mm=(64, 64), pixel_aspect=(1, 1), scale=(1, 1), max_rotation_deg=0, max_displacement_mm=0,
                               snr=(1e6, 1e6))
    kspace, info = simulate_acquisition(image, (1.0, 1.0), torch.Generator().manual_seed(0), ranges)
    assert kspace.shape == (8, 128, 64) and info["readout_oversampling"] == 2
    magnitude = ifft2c(kspace).abs().square().sum(0).sqrt()
    assert float(magnitude[:24].max()) < 1e-3 * float(magnitude.max())
    assert float(magnitude[40:88, 16:48].min()) > 0.05 * float(magnitude.max())


def test_engine_output_resembles_real_raw_kspace():
    """Noise level outside the head, coil-map smoothness, the intensity histogram and the phase
    roughness of the real in-vivo brain and the real phantom (raw twix k-space) fall inside what
    the engine draws; the former fixed simulation (Gaussian-ring coils, one SNR) misses the
    in-vivo coil maps, and the engine without off-resonance phase misses its phase."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as root:
        (Path(root) / "labels" / "synthseg").mkdir(parents=True)
        (Path(root) / "labels" / "synthseg" / "seg.nii.gz").symlink_to(sample_path("synthseg_training_seg_01.nii.gz"))
        (Path(root) / "volumes" / "mni152").mkdir(parents=True)
        (Path(root) / "volumes" / "mni152" / "mni152_t1.nii.gz").symlink_to(sample_path("mni152_2009a_t1.nii.gz"))
        dataset = SyntheticKspaceDataset(root, 40, seed=11, fresh=False)
        simulated = [kspace_statistics(dataset[i]["kspace"]) for i in range(40)]
        polynomial_only = SyntheticKspaceDataset(root, 40, seed=11, fresh=False, acquisition={"off_resonance_std_rad": (0.0, 0.0)})
        smooth = np.array([kspace_statistics(polynomial_only[i]["kspace"])["phase_roughness"] for i in range(40)])

    def envelope(key):
        values = np.array([s[key] for s in simulated])
        return values.min(0), values.max(0)

    invivo = kspace_statistics(torch.from_numpy(np.load(sample_path("pulseq_invivo_brain_16ch_ksp.npy"))))
    phantom = kspace_statistics(torch.from_numpy(np.load(sample_path("pulseq_phantom_gre_32ch_ksp.npy"))))
    for real in (invivo, phantom):
        for key in ("background_ratio", "coil_smoothness"):
            low, high = envelope(key)
            assert low <= real[key] <= high, (key, real[key], low, high)
    # The brain's intensity histogram: some engine draw lies within 0.1 at every quantile.
    quantiles = np.array([s["intensity_quantiles"] for s in simulated])
    assert np.abs(quantiles - np.array(invivo["intensity_quantiles"])).max(1).min() < 0.1
    # The in-vivo brain's phase turns as fast as a typical engine draw's (between the 10th and
    # 90th percentile); without the off-resonance phase it turned faster than 9 draws in 10.
    roughness = np.array([s["phase_roughness"] for s in simulated])
    assert np.quantile(roughness, 0.1) < invivo["phase_roughness"] < np.quantile(roughness, 0.9)
    assert np.quantile(smooth, 0.9) < invivo["phase_roughness"]
    # The fixed simulation's coil maps are far smoother than the real in-vivo array's.
    slice_ = torch.from_numpy(np.load(sample_path("voxelmorph_t1_axial_4slices_80x112.npy"))[1])
    old = kspace_statistics(simulate_multicoil_kspace(slice_, 8, 30.0, 0)[0])
    assert old["coil_smoothness"] - invivo["coil_smoothness"] > 0.1
