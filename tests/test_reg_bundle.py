"""The registration bundle: metadata, weights, the documented demo on the shipped real pair,
orientation handling, one epoch of training and evaluation on tiny crops, two-process training,
and its refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from bundle_checks import REPO, check_metadata, check_one_epoch_trains, check_weights, run_multi_gpu_train, workflow
from mribundles import sample_data

BUNDLE = REPO / "bundles" / "brain_mri_reg_voxelmorph"
SUBJECT = sample_data.path("voxelmorph_t1.nii.gz")
MNI = sample_data.path("mni152_2009a_t1.nii.gz")
PAIR = "voxelmorph_t1_to_mni152_2009a_t1"


def _run(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(BUNDLE / "configs" / "inference.json"), *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    """A dataset_dir with the four files train.json names: 48 mm cubes from the middle of the two
    real brains and their tissue labels, at 1 mm."""
    root = tmp_path_factory.mktemp("reg_tiny")
    for name in ("voxelmorph_t1", "voxelmorph_t1_tissue", "mni152_2009a_t1", "mni152_2009a_tissue"):
        img = nib.load(sample_data.path(f"{name}.nii.gz"))
        crop = tuple(slice(c - 24, c + 24) for c in np.array(img.shape) // 2)
        affine = img.affine.copy()
        affine[:3, 3] = img.affine[:3, :3] @ np.array([s.start for s in crop]) + img.affine[:3, 3]
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[crop], affine), root / f"{name}.nii.gz")
    return root


def test_metadata_valid_against_shipped_schema():
    check_metadata(BUNDLE)


def test_shipped_weights_load_into_network():
    check_weights(BUNDLE)


def test_demo_registers_the_real_subject_to_the_template(tmp_path):
    """The documented command on the shipped pair: every output on the fixed file's grid, and
    the deformable step improves on the affine one without folding."""
    result = _run("--output_dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    mni = nib.load(MNI)
    warped = nib.load(tmp_path / f"{PAIR}_warped.nii.gz")
    labels = nib.load(tmp_path / f"{PAIR}_warped_labels.nii.gz")
    for image in (warped, labels):
        assert image.shape == mni.shape and np.allclose(image.affine, mni.affine)
    assert set(np.unique(np.asarray(labels.dataobj))) == {0, 1, 2, 3}
    ddf = nib.load(tmp_path / f"{PAIR}_ddf.nii.gz")
    assert ddf.shape[-1] == 3 and all(n % 16 == 0 for n in ddf.shape[:3])
    report = json.loads((tmp_path / f"{PAIR}_registration.json").read_text())
    # on this pair (bench_downstream.py) the affine step alone reaches Dice 0.657 (GM) and 0.679
    # (WM), the network alone 0.709 and 0.726, the bundle with its refinement 0.771 and 0.804
    assert report["dice_grey_matter"] > 0.75 and report["dice_white_matter"] > 0.78, report
    assert report["folding_percent"] < 0.1 and 0 < report["log_jacobian_std"] < 0.9, report
    assert (tmp_path / f"{PAIR}_registration.png").stat().st_size > 20_000
    assert not list(tmp_path.glob(".*")), "a temporary file was left behind"


def test_evaluation_refines_as_inference_does_and_training_does_not():
    """evaluate.json scores what inference.json runs (the same instance refinement, written once
    per config file and kept equal here); training does not refine, since the refined velocity
    is detached and would teach the network nothing."""
    configs = {name: json.loads((BUNDLE / "configs" / name).read_text()) for name in ("inference.json", "train.json")}
    assert configs["inference.json"]["refine"] == configs["train.json"]["refine"]
    assert configs["inference.json"]["refine"]["steps"] > 0
    inference = workflow(BUNDLE, ["inference.json"], "infer").parser.get_parsed_content("network_def")
    evaluation = workflow(BUNDLE, ["train.json", "evaluate.json"], "eval").parser.get_parsed_content("network_def")
    training = workflow(BUNDLE, ["train.json"], "train").parser.get_parsed_content("network_def")
    assert evaluation.refine == inference.refine and inference.refine.steps == configs["train.json"]["refine"]["steps"]
    assert training.refine.steps == 0


def test_moving_orientation_does_not_change_what_the_network_sees(tmp_path):
    """The subject stored LIA (as shipped) and RAS (axes flipped, affine to match) is the same
    brain: after preprocessing both lie identically on the fixed grid."""
    image = nib.load(SUBJECT)
    ras = nib.as_closest_canonical(image)
    flipped = tmp_path / "subject_ras.nii.gz"
    nib.save(ras, flipped)
    assert not np.allclose(ras.affine, image.affine)
    pre = {}
    for name, path in (("lia", SUBJECT), ("ras", str(flipped))):
        wf = workflow(BUNDLE, ["inference.json"], "infer", moving_file=path, moving_label_file="", fixed_label_file="")
        steps = wf.parser.get_parsed_content("preprocessing").transforms
        data = wf.parser.get_parsed_content("datalist")[0]
        for step in steps:
            if type(step).__name__ == "AffineAlignd":
                break
            data = step(data)
        pre[name] = data["moving_image"]
    assert torch.allclose(pre["lia"], pre["ras"], atol=1e-4)


def test_train_one_epoch_then_evaluate(tiny_dataset, tiny_synth_root, tmp_path):
    override = {"dataset_dir": str(tiny_dataset), "synth_data_root": str(tiny_synth_root), "output_dir": str(tmp_path / "eval"), "ckpt_dir": str(tmp_path / "models"),
                "max_epochs": 1, "iterations_per_epoch": 2, "val_interval": 1, "crop_size": [32, 32, 32],
                "device": "$torch.device('cpu')"}
    train = check_one_epoch_trains(BUNDLE, override)
    assert len(list((tmp_path / "eval" / "validation").glob("*_registration.json"))) == 2  # both directions
    train.finalize()

    evaluate = workflow(BUNDLE, ["train.json", "evaluate.json"], "eval", **override)
    assert evaluate.check_properties() == []
    evaluate.run()
    state = evaluate.parser.get_parsed_content("validate#evaluator").state
    assert 0 <= state.metrics["dice_grey_matter"] <= 1 and state.metrics["folding_percent"] >= 0
    assert len(state.metric_details["dice_mean"]) == 2
    report = json.loads((tmp_path / "eval" / "voxelmorph_t1_to_mni152_2009a_t1_registration.json").read_text())
    assert report["dice_mean"] == pytest.approx(state.metric_details["dice_mean"][0])
    evaluate.finalize()


def test_multi_gpu_overlay_trains_with_two_processes(tiny_dataset, tiny_synth_root, tmp_path):
    log = run_multi_gpu_train(BUNDLE, tmp_path, "--dataset_dir", str(tiny_dataset), "--synth_data_root", str(tiny_synth_root), "--max_epochs", "1",
                              "--iterations_per_epoch", "4", "--val_interval", "1", "--crop_size", "[32,32,32]")
    assert log.count("SupervisedTrainer - INFO - Epoch[1] Complete") == 2  # ignite logs on both ranks
    assert log.count("-- train_loss:") == 2  # rank 0's StatsHandler alone: 4 // 2 iterations
    network = workflow(BUNDLE, ["inference.json"], "infer").parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True))


@pytest.mark.parametrize("problem", ["2d", "nan"])
def test_bad_input_fails_with_one_line_naming_the_file(problem, tmp_path):
    image = nib.load(MNI)
    data = np.asarray(image.dataobj, np.float32)
    if problem == "2d":
        bad, expected = tmp_path / "slice.nii.gz", "expected a 3D volume (x, y, z), got shape (197, 233)"
        nib.save(nib.Nifti1Image(data[:, :, 90], image.affine), bad)
    else:
        data[100, 100, 100] = np.nan
        bad, expected = tmp_path / "nan.nii.gz", "image contains NaN or Inf values"
        nib.save(nib.Nifti1Image(data, image.affine), bad)
    result = _run("--fixed_file", str(bad), "--output_dir", str(tmp_path / "out"))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == f"error: {bad}: {expected}"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
