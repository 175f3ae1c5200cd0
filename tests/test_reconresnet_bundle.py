"""brain_mri_recon_reconresnet on radial k-space: metadata, weights, training, inference on the
shipped demo, and the files a radial bundle (or a Cartesian one) must refuse."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from bundle_checks import REPO, check_metadata, check_one_epoch_trains, workflow
from mribundles.bundles import file_sha256, read_metadata
from mribundles.io import write_fastmri
from mribundles.io.radial import read_radial_slice, write_radial
from mribundles.metrics import psnr
from mribundles.physics.radial import golden_angle_trajectory, simulate_radial_kspace
from mribundles.physics.simulate import simulate_multicoil_kspace
from mribundles.sample_data import path as sample_path
from mribundles.sample_data import radial_kspace_demo

BUNDLE = REPO / "bundles" / "brain_mri_recon_reconresnet"


def _write_radial_subject(path, slices: np.ndarray, spokes: int = 64, seed: int = 0) -> None:
    """Slices (n, 80, 112) of a real T1, zero-padded to 112 x 112, as 4-coil radial k-space."""
    images = np.zeros((len(slices), 112, 112), np.float32)
    images[:, 16:96] = slices
    trajectory = golden_angle_trajectory(spokes, 224)
    kspace = torch.stack([simulate_radial_kspace(torch.from_numpy(im), trajectory, 4, seed=seed + i)[0] for i, im in enumerate(images)])
    write_radial(path, kspace.reshape(len(images), 4, spokes, 224), trajectory.reshape(2, spokes, 224), reconstruction_rss=images,
                 attrs={"kspace_origin": "simulated from the real voxelmorph T1"})


@pytest.fixture(scope="module")
def tiny_radial_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("recon_brain_radial")
    slices = np.load(sample_path("voxelmorph_t1_axial_4slices_80x112.npy"))
    _write_radial_subject(root / "train" / "subject_a.h5", slices[:2], seed=0)
    _write_radial_subject(root / "val" / "subject_b.h5", slices[2:], seed=100)
    return root


def test_metadata_valid_against_shipped_schema():
    check_metadata(BUNDLE)


def test_shipped_radial_weights_are_small_recorded_and_load():
    weights = BUNDLE / "models" / "model_radial.pt"
    assert weights.stat().st_size < 25 * 2**20
    assert read_metadata(BUNDLE)["weights_sha256"]["models/model_radial.pt"] == file_sha256(weights)
    network = workflow(BUNDLE, ["inference.json"], "infer").parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))  # strict


def test_radial_training_epoch_saves_resumable_weights(tiny_radial_dataset, tmp_path):
    override = {"dataset_dir": str(tiny_radial_dataset), "output_dir": str(tmp_path / "eval"), "ckpt_dir": str(tmp_path / "models"),
                "weights_file": "model.pt", "max_epochs": 1, "val_interval": 1, "device": "$torch.device('cpu')"}
    train = check_one_epoch_trains(BUNDLE, override, iterations=2)  # two slices, one per batch
    evaluator = train.parser.get_parsed_content("validate#evaluator")
    assert 0 < evaluator.state.metrics["val_ssim"] <= 1 and evaluator.state.metrics["val_psnr"] > 10
    train.finalize()


def test_demo_beats_gridding_by_four_db_at_64_spokes(tmp_path):
    """The documented command with no arguments: three MNI planes, 64 spokes, 256 x 256."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(BUNDLE / "configs" / "inference.json"),
           "--output_dir", str(out)]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    stem = "mni152_2009a_radial_8coil_kspace"
    recon = nib.load(out / f"{stem}_recon.nii.gz").get_fdata()
    assert recon.shape == (256, 256, 3) and (out / f"{stem}_recon.png").stat().st_size > 10_000
    demo = radial_kspace_demo()
    gains = []
    for z in range(3):
        kspace, trajectory, reference = read_radial_slice(demo, z, reference=True)
        from mribundles.transforms import GridRadiald

        gridded = GridRadiald()({"kspace": kspace, "trajectory": trajectory})["zero_filled"][0]
        ref = reference.numpy()
        image = recon[..., z].T  # NIfTI (x, y) -> (row, column)
        gains.append(psnr(ref, image, float(ref.max())) - psnr(ref, gridded.numpy(), float(ref.max())))
    assert min(gains) > 4.0, gains


def _run_inference(bundle: str, kspace_file, out):
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(REPO / "bundles" / bundle / "configs" / "inference.json"),
           "--kspace_file", str(kspace_file), "--output_dir", str(out)]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_cartesian_file_to_the_radial_bundle_is_refused_in_one_line(tmp_path):
    slices = np.load(sample_path("voxelmorph_t1_axial_4slices_80x112.npy"))
    cartesian = tmp_path / "cartesian.h5"
    write_fastmri(cartesian, simulate_multicoil_kspace(torch.from_numpy(slices[0]), 4)[0][None])
    result = _run_inference("brain_mri_recon_reconresnet", cartesian, tmp_path / "out")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {cartesian}: Cartesian k-space (no 'trajectory' dataset): reconstruct it with a Cartesian bundle")


def test_radial_file_to_a_cartesian_bundle_is_refused_in_one_line(tiny_radial_dataset, tmp_path):
    radial = tiny_radial_dataset / "val" / "subject_b.h5"
    result = _run_inference("brain_mri_recon_varnet", radial, tmp_path / "out")
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {radial}: radial k-space (the file has a 'trajectory')")


def test_trajectory_that_does_not_fit_and_too_many_spokes_are_refused(tiny_radial_dataset, tmp_path):
    import h5py

    bad = tmp_path / "short_trajectory.h5"
    with h5py.File(tiny_radial_dataset / "val" / "subject_b.h5", "r") as hf, h5py.File(bad, "w") as out:
        out["kspace"] = hf["kspace"][()]
        out["trajectory"] = hf["trajectory"][:, :60]
    result = _run_inference("brain_mri_recon_reconresnet", bad, tmp_path / "out")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {bad}: trajectory (2, 60, 224) does not match the k-space's spokes x readout (64, 224): expected (2, 64, 224)")

    radial = tiny_radial_dataset / "val" / "subject_b.h5"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(BUNDLE / "configs" / "inference.json"),
           "--kspace_file", str(radial), "--spokes", "100", "--output_dir", str(tmp_path / "out2")]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == f"error: {radial}: 100 spokes requested, the k-space holds 64"
    assert not (tmp_path / "out2").exists() or not any((tmp_path / "out2").iterdir())


def test_cartesian_weights_beat_zero_filling_through_evaluate_recon(tiny_recon_dataset):
    """The same bundle with `sampling` cartesian (set by evaluate-recon for a Cartesian file)."""
    from mribundles.evaluation import evaluate_recon

    weights = BUNDLE / "models" / "model_cartesian.pt"
    assert read_metadata(BUNDLE)["weights_sha256"]["models/model_cartesian.pt"] == file_sha256(weights)
    result = evaluate_recon(BUNDLE, tiny_recon_dataset / "val" / "subject_b.h5", "random1d", 4, cs_iters=20)
    methods = result["methods"]
    assert list(methods) == ["brain_mri_recon_reconresnet", "zero-filled", "l1-wavelet"]
    assert methods["brain_mri_recon_reconresnet"]["psnr"] > methods["zero-filled"]["psnr"] + 1  # 28.99 against 27.82 when written


def test_radial_file_is_evaluated_against_gridding_and_cs(tiny_radial_dataset):
    from mribundles.evaluation import evaluate_recon

    result = evaluate_recon(BUNDLE, tiny_radial_dataset / "val" / "subject_b.h5", spokes=32, cs_iters=10)
    assert result["settings"]["sampling"] == "radial" and result["settings"]["spokes"] == 32
    methods = result["methods"]
    assert list(methods) == ["brain_mri_recon_reconresnet", "gridding", "l1-wavelet"]
    assert methods["brain_mri_recon_reconresnet"]["psnr"] > methods["gridding"]["psnr"] + 2
    assert all(len(m["per_slice"]["psnr"]) == 2 for m in methods.values())
