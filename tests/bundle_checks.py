"""Model-zoo style checks that a reconstruction bundle's configs run on tiny data.

tests/test_recon_bundles.py runs each of them for every reconstruction bundle.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigWorkflow

from mribundles.bundles import file_sha256
from mribundles.sharing import verify_bundle_metadata

REPO = Path(__file__).resolve().parents[1]


def configs(bundle: Path, *names: str) -> list[str]:
    return [str(bundle / "configs" / name) for name in names]


def workflow(bundle: Path, names: list[str], workflow_type: str, **override) -> ConfigWorkflow:
    wf = ConfigWorkflow(
        config_file=configs(bundle, *names),
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        workflow_type=workflow_type,
        bundle_root=str(bundle),
        **override,
    )
    wf.initialize()
    return wf


def check_metadata(bundle: Path) -> None:
    verify_bundle_metadata(bundle)
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["name"] == bundle.name


def check_weights(bundle: Path) -> None:
    """Shipped weights: under 25 MB, loadable with weights_only, matching the network."""
    weights = bundle / "models" / "model.pt"
    assert weights.stat().st_size < 25 * 2**20
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["weights_sha256"]["models/model.pt"] == file_sha256(weights)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    wf = workflow(bundle, ["inference.json"], "infer")
    network = wf.parser.get_parsed_content("network_def")
    network.load_state_dict(state)  # strict: every key present, every shape right


def check_train_and_evaluate(bundle: Path, dataset: Path, tmp_path: Path) -> None:
    """check_properties() is empty; one epoch trains, validates and saves; evaluate reloads."""
    override = {"dataset_dir": str(dataset), "output_dir": str(tmp_path / "eval"), "ckpt_dir": str(tmp_path / "models"),
                "max_epochs": 1, "val_interval": 1, "device": "$torch.device('cpu')"}
    train = workflow(bundle, ["train.json"], "train", **override)
    assert train.check_properties() == []
    before = {k: v.clone() for k, v in train.parser.get_parsed_content("network").state_dict().items()}
    train.run()
    trainer = train.parser.get_parsed_content("train#trainer")
    assert trainer.state.iteration == 2 and np.isfinite(float(trainer.state.output[0]["loss"]))
    after = train.parser.get_parsed_content("network").state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "one iteration changed no weight"
    assert (tmp_path / "models" / "model.pt").is_file()
    assert list((tmp_path / "eval" / "checkpoints").glob("checkpoint_epoch=1.pt"))
    train.finalize()

    evaluate = workflow(bundle, ["train.json", "evaluate.json"], "eval", **{**override, "acceleration": 8, "center_fraction": 0.04})
    assert evaluate.check_properties() == []
    evaluate.run()
    metrics = dict(line.split(",") for line in (tmp_path / "eval" / "metrics.csv").read_text().splitlines())
    assert 0 < float(metrics["val_ssim"]) <= 1 and float(metrics["val_psnr"]) > 5
    evaluate.finalize()


def check_inference_on_shipped_brain(bundle: Path, tmp_path: Path) -> np.ndarray:
    """The documented command, no overrides but the output folder: NIfTI and PNG appear."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "inference.json"),
           "--output_dir", str(out)]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    image = nib.load(out / "sigpy_brain_8ch_poisson_R8_recon.nii.gz").get_fdata()
    assert image.shape == (180, 230, 1) and np.isfinite(image).all() and image.max() > 0
    assert (out / "sigpy_brain_8ch_poisson_R8_recon.png").stat().st_size > 10_000
    assert not list(out.glob(".*")), "a temporary file was left behind"
    return image


def check_inference_retrospective(bundle: Path, dataset: Path, tmp_path: Path) -> None:
    """Overridable ids: another file, format and coil count, a 1D mask drawn at run time."""
    out = tmp_path / "retro"
    override = {"kspace_file": str(dataset / "val" / "subject_b.h5"), "output_dir": str(out), "mask": "equispaced1d",
                "acceleration": 4, "center_fraction": 0.08, "seed": 3, "device": "cpu"}
    wf = workflow(bundle, ["inference.json"], "infer", **override)
    assert wf.check_properties() == []
    wf.run()
    image = nib.load(out / "subject_b_recon.nii.gz").get_fdata()
    assert image.shape == (112, 80, 2) and np.isfinite(image).all()


def check_multi_process_train(bundle: Path, dataset: Path, tmp_path: Path) -> None:
    """The multi-GPU overlay under torchrun with two CPU processes (gloo): both ranks train,
    rank 0 alone logs and saves, and the saved weights load into the plain network."""
    train, overlay = configs(bundle, "train.json", "multi_gpu_train.json")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "monai.bundle", "run", "--config_file", f"['{train}','{overlay}']",
           "--meta_file", str(bundle / "configs" / "metadata.json"),
           "--logging_file", str(bundle / "configs" / "logging.conf"),
           "--bundle_root", str(bundle), "--dataset_dir", str(dataset), "--max_epochs", "1", "--val_interval", "1",
           "--output_dir", str(tmp_path / "eval"), "--ckpt_dir", str(tmp_path / "models")]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    # Both ranks train (ignite's own log line comes twice); StatsHandler runs on rank 0 only.
    log = result.stdout + result.stderr
    assert log.count("SupervisedTrainer - INFO - Epoch[1] Complete") == 2
    assert log.count("-- train_loss:") == 1 and log.count("Epoch[1] Metrics --") == 1
    state = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    wf = workflow(bundle, ["inference.json"], "infer")
    wf.parser.get_parsed_content("network_def").load_state_dict(state)


def check_bad_input_fails_with_one_line(bundle: Path, tmp_path: Path) -> None:
    """NaN k-space through the documented command: non-zero exit, the last line names the
    file and the problem, and no output file is left."""
    kspace = np.load(REPO / "common/mribundles/sample_data/pulseq_phantom_gre_32ch_ksp.npy")
    kspace[0, 3, 3] = np.nan
    bad = tmp_path / "nan_kspace.npy"
    np.save(bad, kspace)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "inference.json"),
           "--kspace_file", str(bad), "--output_dir", str(out)]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == f"error: {bad}: k-space contains NaN or Inf values"
    assert not out.exists() or not any(out.iterdir())
