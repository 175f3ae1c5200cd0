"""The tissue-segmentation bundle: metadata, weights, each config on tiny volumes, the grid
convention of its outputs, and its refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from bundle_checks import REPO, check_metadata, check_one_epoch_trains, check_torchscript_export, run_multi_gpu_train, workflow
from mribundles import sample_data
from mribundles.bundles import file_sha256
from mribundles.chains import SegStage
from mribundles.transforms import LoadVolumed

BUNDLE = REPO / "bundles" / "brain_mri_tissue_seg"
MNI = sample_data.path("mni152_2009a_t1.nii.gz")


@pytest.fixture(scope="module")
def tiny_seg_dataset(tmp_path_factory) -> Path:
    """train/ and val/: two 48x56x40 crops of the real MNI T1 at 2 mm, with labels from
    intensity thresholds (only the configs' mechanics are tested here, not the labels)."""
    root = tmp_path_factory.mktemp("seg_brain")
    img = nib.load(MNI)
    data = np.asarray(img.dataobj, np.float32)[::2, ::2, ::2] / 255.0
    affine = img.affine @ np.diag([2.0, 2.0, 2.0, 1.0])
    for split, z0 in (("train", 30), ("val", 45)):
        crop = data[25:73, 30:86, z0 : z0 + 40]
        labels = np.digitize(crop, [0.05, 0.35, 0.6]).astype(np.uint8)  # background, CSF, GM, WM by brightness
        (root / split).mkdir()
        nib.save(nib.Nifti1Image(crop, affine), root / split / "sub.nii.gz")
        nib.save(nib.Nifti1Image(labels, affine), root / split / "sub_label.nii.gz")
    return root


def _run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(BUNDLE / "configs" / "inference.json"), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_metadata_valid_against_shipped_schema():
    check_metadata(BUNDLE)


def test_shipped_weights_load_into_network():
    weights = BUNDLE / "models" / "model.pt"
    assert weights.stat().st_size < 25 * 2**20
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert meta["weights_sha256"]["models/model.pt"] == file_sha256(weights)
    network = workflow(BUNDLE, ["inference.json"], "infer").parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))


def test_inference_on_the_shipped_template_labels_all_tissues_on_the_input_grid(tmp_path):
    """Every tissue is labelled on the input's grid, and only where there is tissue; a chain's
    in-memory stage, built from the same bundle, gives the same labels."""
    result = _run("--output_dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    seg = nib.load(tmp_path / "mni152_2009a_t1_seg.nii.gz")
    image = nib.load(MNI)
    assert seg.shape == image.shape and np.allclose(seg.affine, image.affine)
    labels = np.asarray(seg.dataobj)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2, 3}
    brain = np.asarray(image.dataobj) > 0
    assert not labels[~brain].any()  # nothing was imaged there
    fractions = [(labels[brain] == c).mean() for c in (1, 2, 3)]
    assert 0.3 < fractions[1] < 0.7 and 0.2 < fractions[2] < 0.6, fractions  # GM and WM dominate
    assert (tmp_path / "mni152_2009a_t1_seg.png").stat().st_size > 20_000
    assert not list(tmp_path.glob(".*")), "a temporary file was left behind"
    volume = LoadVolumed("image")({"image": str(MNI)})["image"]
    in_memory, _ = SegStage(BUNDLE, torch.device("cpu"))(volume)
    assert np.array_equal(in_memory[0].numpy(), labels)


def test_labels_follow_the_input_orientation(tmp_path):
    """The same brain stored flipped (LAS, x reversed): the labels come back flipped with it,
    on the flipped file's grid, never misaligned. A central 96^3 block of the template keeps
    the two runs short; it is still real anatomy with all three tissues."""
    image = nib.load(MNI)
    start = np.array([50, 60, 45])
    data = np.asarray(image.dataobj)[50:146, 60:156, 45:141]
    shift = np.eye(4)
    shift[:3, 3] = start
    ras_affine = image.affine @ shift
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = data.shape[0] - 1
    ras, las = tmp_path / "block_ras.nii.gz", tmp_path / "block_las.nii.gz"
    nib.save(nib.Nifti1Image(data, ras_affine), ras)
    nib.save(nib.Nifti1Image(data[::-1].copy(), ras_affine @ flip), las)
    first = _run("--image_file", str(ras), "--output_dir", str(tmp_path / "ras"))
    second = _run("--image_file", str(las), "--output_dir", str(tmp_path / "las"))
    assert first.returncode == 0 and second.returncode == 0, (first.stderr + second.stderr)[-2000:]
    ras_labels = np.asarray(nib.load(tmp_path / "ras" / "block_ras_seg.nii.gz").dataobj)
    las_seg = nib.load(tmp_path / "las" / "block_las_seg.nii.gz")
    assert np.allclose(las_seg.affine, ras_affine @ flip)
    assert {1, 2, 3} <= set(np.unique(ras_labels).tolist())
    agreement = (np.asarray(las_seg.dataobj)[::-1] == ras_labels).mean()
    assert agreement > 0.99, agreement  # the network sees the same RAS volume both times


def test_train_one_epoch_then_evaluate(tiny_seg_dataset, tiny_synth_root, tmp_path):
    """Training draws from the label-map engine (here the one shipped label map); validation and
    evaluation read real volumes."""
    override = {"dataset_dir": str(tiny_seg_dataset), "synth_data_root": str(tiny_synth_root),
                "output_dir": str(tmp_path / "eval"), "ckpt_dir": str(tmp_path / "models"),
                "max_epochs": 1, "iterations_per_epoch": 2, "batch_size": 1, "val_interval": 1,
                "patch_size": [32, 32, 32], "device": "$torch.device('cpu')"}
    check_one_epoch_trains(BUNDLE, override).finalize()

    evaluate = workflow(BUNDLE, ["train.json", "evaluate.json"], "eval", **override)
    assert evaluate.check_properties() == []
    evaluate.run()
    state = evaluate.parser.get_parsed_content("validate#evaluator").state
    dice = [state.metrics[f"val_dice_{c}"] for c in ("csf", "gm", "wm")]
    assert all(0 <= d <= 1 for d in dice) and all(state.metrics[f"val_hd95_{c}"] >= 0 for c in ("csf", "gm", "wm"))
    assert abs(float(state.metrics["val_mean_dice"]) - np.mean(dice)) < 1e-4
    metrics = dict(line.split(",") for line in (tmp_path / "eval" / "metrics.csv").read_text().splitlines())
    assert float(metrics["val_dice_wm"]) == pytest.approx(dice[2], abs=1e-4)
    assert (tmp_path / "eval" / "val_dice_gm_raw.csv").is_file()
    evaluate.finalize()


def test_torchscript_export_matches_eager(tmp_path):
    check_torchscript_export(BUNDLE, tmp_path)


@pytest.mark.parametrize("problem", ["2d", "nan", "empty_label"])
def test_bad_input_fails_with_one_line_naming_the_file(problem, tmp_path):
    image = nib.load(MNI)
    data = np.asarray(image.dataobj, np.float32)
    if problem == "2d":
        bad, expected = tmp_path / "slice.nii.gz", "expected a 3D volume (x, y, z), got shape (197, 233)"
        nib.save(nib.Nifti1Image(data[:, :, 90], image.affine), bad)
    elif problem == "nan":
        data[100, 100, 100] = np.nan
        bad, expected = tmp_path / "nan.nii.gz", "image contains NaN or Inf values"
        nib.save(nib.Nifti1Image(data, image.affine), bad)
    else:
        from mribundles.errors import InvalidInputError
        from mribundles.transforms import LoadVolumed

        empty = tmp_path / "empty_label.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros((16, 16, 16), np.uint8), np.eye(4)), empty)
        with pytest.raises(InvalidInputError, match="label map is empty") as info:
            LoadVolumed(["label"], label_keys="label")({"label": str(empty)})
        assert str(empty) in str(info.value)
        return
    result = _run("--image_file", str(bad), "--output_dir", str(tmp_path / "out"))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == f"error: {bad}: {expected}"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_multi_gpu_overlay_trains_with_two_processes(tiny_seg_dataset, tiny_synth_root, tmp_path):
    """torchrun, two CPU processes (gloo): both ranks start from --init_weights and train on their
    own patches, rank 0 alone logs and saves, and the saved weights load into the plain network."""
    weights = BUNDLE / "models" / "model.pt"
    log = run_multi_gpu_train(BUNDLE, tmp_path, "--dataset_dir", str(tiny_seg_dataset), "--synth_data_root", str(tiny_synth_root),
                              "--max_epochs", "1", "--iterations_per_epoch", "4", "--batch_size", "2", "--val_interval", "1",
                              "--patch_size", "[32,32,32]", "--init_weights", str(weights))
    assert log.count(f"Restored all variables from {weights}") == 2  # into each rank's DistributedDataParallel
    assert log.count("SupervisedTrainer - INFO - Epoch[1] Complete") == 2  # ignite logs on both ranks
    assert log.count("-- train_loss:") == 2  # rank 0's StatsHandler alone: 4 // 2 iterations
    network = workflow(BUNDLE, ["inference.json"], "infer").parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True))
