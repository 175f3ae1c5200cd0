"""The super-resolution bundle: metadata, weights, the demo on the shipped held-out template,
an LR file in another orientation, each config on tiny volumes, and its refusals."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from bundle_checks import REPO, check_metadata, check_one_epoch_trains, check_torchscript_export, check_unsafe_weights_refused, check_weights, workflow
from mribundles import sample_data
from mribundles.metrics import psnr
from mribundles.physics import crop_to_multiple, highres_affine, interpolate, lowres_affine, truncate_kspace

BUNDLE = REPO / "bundles" / "brain_mri_sr"
MNI = sample_data.path("mni152_2009a_t1.nii.gz")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _mni() -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(MNI)
    return np.asarray(image.dataobj, np.float32), image.affine


def _run(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(BUNDLE / "configs" / "inference.json"), *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def tiny_volumes(tmp_path_factory) -> dict[str, str]:
    """Two 48x56x40 crops of the real MNI T1 at 2 mm (only the configs' mechanics are tested)."""
    root = tmp_path_factory.mktemp("sr_brain")
    data, affine = _mni()
    data, affine = data[::2, ::2, ::2], affine @ np.diag([2.0, 2.0, 2.0, 1.0])
    files = {}
    for split, z0 in (("train", 30), ("val", 45)):
        files[split] = str(root / f"{split}.nii.gz")
        nib.save(nib.Nifti1Image(data[25:73, 30:86, z0 : z0 + 40], affine), files[split])
    return files


def test_metadata_valid_against_shipped_schema():
    check_metadata(BUNDLE)


def test_shipped_weights_load_into_network():
    check_weights(BUNDLE)


def test_demo_on_the_held_out_template_beats_interpolation_on_its_grid(tmp_path):
    """The documented command with no arguments but the output folder: the MNI template (never
    trained on) truncated 4x4 in k-space in-plane is super-resolved onto its own 1 mm grid."""
    result = _run("--output_dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    out = nib.load(tmp_path / "mni152_2009a_t1_sr.nii.gz")
    data, affine = _mni()
    reference = torch.from_numpy(crop_to_multiple(torch.from_numpy(data), (4, 4, 1)).numpy())
    assert out.shape == (196, 232, 189) == tuple(reference.shape)  # cropped to a multiple of 4 in-plane
    assert np.allclose(out.affine, affine) and out.get_data_dtype() == np.float32
    sr = torch.from_numpy(out.get_fdata(dtype=np.float32))
    lr = truncate_kspace(reference, (4, 4, 1))
    scores = {mode: psnr(reference, interpolate(lr, (4, 4, 1), mode)) for mode in ("sinc", "linear")}
    scores["bundle"] = psnr(reference, sr)
    assert scores["bundle"] > scores["sinc"] + 0.5 and scores["bundle"] > scores["linear"] + 1.5, scores
    assert (tmp_path / "mni152_2009a_t1_sr.png").stat().st_size > 50_000
    assert not list(tmp_path.glob(".*")), "a temporary file was left behind"


def test_lr_file_in_another_orientation_comes_back_on_its_own_refined_grid(tmp_path):
    """An LR file (4 mm in-plane) stored RAS and the same file stored LAS (x reversed): each
    output lies on its own file's 1 mm grid, and the two agree voxel for voxel once flipped,
    because the network sees the same RAS volume both times."""
    data, affine = _mni()
    block = torch.from_numpy(data[50:146, 60:156, 70:102])  # 96 x 96 x 32 mm of the template
    block_affine = affine.copy()
    block_affine[:3, 3] = (affine @ [50, 60, 70, 1])[:3]
    lr = truncate_kspace(block, (4, 4, 1)).numpy()
    lr_affine = lowres_affine(block_affine, (4, 4, 1))
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = lr.shape[0] - 1
    outputs = {}
    for name, array, lr_aff in (("ras", lr, lr_affine), ("las", lr[::-1].copy(), lr_affine @ flip)):
        path = tmp_path / f"lr_{name}.nii.gz"
        nib.save(nib.Nifti1Image(array, lr_aff), path)
        wf = workflow(BUNDLE, ["inference.json"], "infer", image_file=str(path), output_dir=str(tmp_path / name), device="$torch.device('cpu')")
        wf.run()
        wf.finalize()
        outputs[name] = nib.load(tmp_path / name / f"lr_{name}_sr.nii.gz")
        assert outputs[name].shape == (96, 96, 32)
        assert np.allclose(outputs[name].affine, highres_affine(lr_aff, (4, 4, 1)))
    assert np.allclose(outputs["ras"].affine, block_affine)
    ras, las = (np.asarray(o.dataobj) for o in (outputs["ras"], outputs["las"]))
    np.testing.assert_allclose(las[::-1], ras, atol=1e-3)
    assert psnr(block, torch.from_numpy(ras)) > psnr(block, interpolate(torch.from_numpy(lr), (4, 4, 1), "linear"))


def tiny_training(volumes: dict[str, str], synth_root, tmp_path) -> dict:
    """One epoch of two iterations on 16^3 patches at 2 mm, validated once, written under
    ``tmp_path``; the synthetic share draws two heads at 2 mm from the shipped label map, one
    cached at a time (replaced at the epoch's end)."""
    return {"train_files": [{"image": volumes["train"]}], "val_files": [{"image": volumes["val"]}],
            "synth_data_root": str(synth_root), "synthetic_heads": 2, "synth_cache": 1, "synth_replace_rate": 1.0,
            "output_dir": str(tmp_path / "eval"), "ckpt_dir": str(tmp_path / "models"), "max_epochs": 1,
            "iterations_per_epoch": 2, "val_interval": 1, "patch_size": [16, 16, 16], "patches_per_volume": 2,
            "factors": [2, 4], "target_spacing": 2.0, "val_factor": 2, "device": "$torch.device('cpu')"}


def test_train_one_epoch_then_evaluate(tiny_volumes, tiny_synth_root, tmp_path):
    override = tiny_training(tiny_volumes, tiny_synth_root, tmp_path)
    train = check_one_epoch_trains(BUNDLE, override)
    synthetic = train.parser.get_parsed_content("train#synth_dataset")
    # a draw is a patch of the one cached synthesised head or of one of the real volume's pairs
    assert len(train.parser.get_parsed_content("train#dataset")) == 1 + len(train.parser.get_parsed_content("train_pairs"))
    patches = synthetic[0]
    assert len(patches) == 2 and "synthesised head" in patches[0]["image"].meta["filename_or_obj"]
    assert patches[0]["image"].shape == patches[0]["label"].shape == (1, 16, 16, 16)
    train.finalize()

    evaluate = workflow(BUNDLE, ["train.json", "evaluate.json"], "eval", **override)
    assert evaluate.check_properties() == []
    evaluate.run()
    state = evaluate.parser.get_parsed_content("validate#evaluator").state
    metrics = dict(line.split(",") for line in (tmp_path / "eval" / "metrics.csv").read_text().splitlines())
    assert float(metrics["val_psnr"]) == pytest.approx(state.metrics["val_psnr"], abs=1e-3) and float(metrics["val_psnr"]) > 20
    assert 0.5 < float(metrics["val_ssim"]) <= 1
    rows = [line.split(",") for line in (tmp_path / "eval" / "val_psnr_raw.csv").read_text().splitlines()[1:]]
    assert len(rows) == 1 and rows[0][0] == tiny_volumes["val"]
    assert float(rows[0][1]) == pytest.approx(float(metrics["val_psnr"]), abs=1e-3)
    evaluate.finalize()


@pytest.mark.parametrize("problem", ["2d", "nan"])
def test_bad_input_fails_with_one_line_naming_the_file(problem, tmp_path):
    data, affine = _mni()
    if problem == "2d":
        bad, expected = tmp_path / "slice.nii.gz", "expected a 3D volume (x, y, z), got shape (197, 233)"
        nib.save(nib.Nifti1Image(data[:, :, 90], affine), bad)
    else:
        data = data[::4, ::4].copy()
        data[20, 20, 100] = np.nan
        bad, expected = tmp_path / "nan.nii.gz", "image contains NaN or Inf values"
        nib.save(nib.Nifti1Image(data, affine @ np.diag([4.0, 4.0, 1.0, 1.0])), bad)
    result = _run("--image_file", str(bad), "--output_dir", str(tmp_path / "out"))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == f"error: {bad}: {expected}"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_torchscript_export_matches_eager(tmp_path):
    check_torchscript_export(BUNDLE, tmp_path)


def test_unsafe_weights_are_refused(tmp_path):
    check_unsafe_weights_refused(BUNDLE, tmp_path)


def test_metadata_records_the_weights_it_ships():
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert set(meta["weights_sha256"]) == {"models/model.pt"}
    assert (BUNDLE / "models" / "model.pt").stat().st_size < 25 * 2**20
