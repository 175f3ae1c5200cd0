"""Model-zoo style checks that a reconstruction bundle's configs run on tiny data.

tests/test_recon_bundles.py runs each of them for every reconstruction bundle.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from contextlib import contextmanager
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


def check_one_epoch_trains(bundle: Path, override: dict, iterations: int = 2) -> ConfigWorkflow:
    """train.json with ``override``: check_properties() is empty, the epoch runs ``iterations``
    iterations with a finite loss, changes weights and saves ``<ckpt_dir>/model.pt`` and a
    resumable checkpoint. Returns the workflow, not yet finalized, for the caller's own checks."""
    train = workflow(bundle, ["train.json"], "train", **override)
    assert train.check_properties() == []
    before = {k: v.clone() for k, v in train.parser.get_parsed_content("network").state_dict().items()}
    train.run()
    trainer = train.parser.get_parsed_content("train#trainer")
    assert trainer.state.iteration == iterations and np.isfinite(float(trainer.state.output[0]["loss"]))
    after = train.parser.get_parsed_content("network").state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "training changed no weight"
    assert (Path(override["ckpt_dir"]) / "model.pt").is_file()
    assert list((Path(override["output_dir"]) / "checkpoints").glob("checkpoint_epoch=1.pt"))
    return train


def check_train_and_evaluate(bundle: Path, dataset: Path, tmp_path: Path, train_override: dict | None = None,
                             iterations: int = 2) -> None:
    """check_properties() is empty; one epoch of ``iterations`` trains, validates and saves;
    evaluate reloads. ``train_override``: more ids, e.g. the training data engine's folder and
    epoch length."""
    override = {"dataset_dir": str(dataset), "output_dir": str(tmp_path / "eval"), "ckpt_dir": str(tmp_path / "models"),
                "max_epochs": 1, "val_interval": 1, "device": "$torch.device('cpu')", **(train_override or {})}
    check_one_epoch_trains(bundle, override, iterations).finalize()

    evaluate = workflow(bundle, ["train.json", "evaluate.json"], "eval", **{**override, "acceleration": 8, "center_fraction": 0.04})
    assert evaluate.check_properties() == []
    evaluate.run()
    metrics = dict(line.split(",") for line in (tmp_path / "eval" / "metrics.csv").read_text().splitlines())
    assert 0 < float(metrics["val_ssim"]) <= 1 and float(metrics["val_psnr"]) > 5
    # Per-slice table: one row per validation slice, named file#slice, whose mean is the metric.
    rows = [line.split(",") for line in (tmp_path / "eval" / "val_ssim_raw.csv").read_text().splitlines()[1:]]
    assert [r[0] for r in rows] == ["subject_b.h5#0", "subject_b.h5#1"]
    assert abs(np.mean([float(r[1]) for r in rows]) - float(metrics["val_ssim"])) < 1e-4
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


def run_multi_gpu_train(bundle: Path, tmp_path: Path, *args: str) -> str:
    """train.json with its multi_gpu_train.json overlay under torchrun, two CPU processes (gloo,
    one thread each), writing to ``tmp_path``/eval and ``tmp_path``/models; ``args`` are more
    overrides. Asserts success and returns the log of both ranks."""
    import os

    train, overlay = configs(bundle, "train.json", "multi_gpu_train.json")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "monai.bundle", "run", "--config_file", f"['{train}','{overlay}']",
           "--meta_file", str(bundle / "configs" / "metadata.json"),
           "--logging_file", str(bundle / "configs" / "logging.conf"), "--bundle_root", str(bundle),
           "--output_dir", str(tmp_path / "eval"), "--ckpt_dir", str(tmp_path / "models"), *args]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def check_multi_process_train(bundle: Path, dataset: Path, tmp_path: Path, *args: str, iterations_per_rank: int = 1) -> None:
    """The multi-GPU overlay under torchrun with two CPU processes (gloo): both ranks train,
    rank 0 alone logs and saves, and the saved weights load into the plain network. ``args``:
    more overrides."""
    log = run_multi_gpu_train(bundle, tmp_path, "--dataset_dir", str(dataset), "--max_epochs", "1", "--val_interval", "1", *args)
    # Both ranks train (ignite's own log line comes twice); StatsHandler runs on rank 0 only.
    assert log.count("SupervisedTrainer - INFO - Epoch[1] Complete") == 2
    assert log.count("-- train_loss:") == iterations_per_rank and log.count("Epoch[1] Metrics --") == 1
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


def check_tracked_inference(bundle: Path, dataset: Path, tmp_path: Path) -> None:
    """--tracking mlflow: one run in <output_dir>/mlruns.db holding the bundle's lineage
    (name, version, weights sha256, acquisition settings), the executed config and the figure.
    Without tracking no store is created."""
    import mlflow

    out = tmp_path / "tracked"
    override = {"kspace_file": str(dataset / "val" / "subject_b.h5"), "output_dir": str(out), "mask": "random1d",
                "acceleration": 8, "center_fraction": 0.04, "seed": 5, "device": "cpu"}
    wf = workflow(bundle, ["inference.json"], "infer", tracking="mlflow", **override)
    wf.run()
    wf.finalize()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{out}/mlruns.db")
    experiment = client.get_experiment_by_name(bundle.name)
    (run,) = client.search_runs([experiment.experiment_id])
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    params = run.data.params
    assert params["bundle_name"] == bundle.name and params["bundle_version"] == meta["version"]
    assert params["weights_sha256"] == meta["weights_sha256"]["models/model.pt"]
    assert (params["mask"], params["acceleration"], params["seed"], params["device"]) == ("random1d", "8", "5", "cpu")
    assert run.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "outputs")}
    assert any(a.startswith("config_") and a.endswith(".json") for a in artifacts), artifacts
    assert figures == {"outputs/subject_b_recon.png"}

    # Other weights than the bundle's own (adapted ones, say): the lineage names the ones that ran.
    from mribundles.bundles import file_sha256

    state = torch.load(Path(params["weights_file"]), map_location="cpu", weights_only=True)
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = state[first] + 1.0
    other = tmp_path / "adapted.pt"
    torch.save(state, other)
    elsewhere = tmp_path / "tracked_other"
    wf = workflow(bundle, ["inference.json"], "infer", tracking="mlflow",
                  **{**override, "output_dir": str(elsewhere), "ckpt_path": str(other)})
    wf.run()
    wf.finalize()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{elsewhere}/mlruns.db")
    (run,) = client.search_runs([client.get_experiment_by_name(bundle.name).experiment_id])
    assert run.data.params["weights_file"] == str(other)
    assert run.data.params["weights_sha256"] == file_sha256(other) != meta["weights_sha256"]["models/model.pt"]

    untracked = tmp_path / "untracked"
    wf = workflow(bundle, ["inference.json"], "infer", **{**override, "output_dir": str(untracked)})
    wf.run()
    wf.finalize()
    assert (untracked / "subject_b_recon.nii.gz").is_file() and not (untracked / "mlruns.db").exists()


def check_torchscript_export(bundle: Path, tmp_path: Path) -> None:
    """`monai.bundle ckpt_export` of the shipped weights: metadata embedded, same output as eager."""
    exported = tmp_path / "model.ts"
    cmd = [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(exported),
           "--ckpt_file", str(bundle / "models" / "model.pt"), "--meta_file", str(bundle / "configs" / "metadata.json"),
           "--config_file", str(bundle / "configs" / "inference.json")]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    extra = {"metadata.json": ""}
    scripted = torch.jit.load(str(exported), map_location="cpu", _extra_files=extra)
    assert json.loads(extra["metadata.json"])["name"] == bundle.name

    network = workflow(bundle, ["inference.json"], "infer").parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True))
    network.eval()
    inputs = _example_inputs(bundle)
    with torch.no_grad():
        expected, actual = network(*inputs), scripted(*inputs)
    assert expected.abs().max() > 0
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))


def _example_inputs(bundle: Path) -> tuple:
    """A real input of the bundle's network: the phantom's k-space undersampled 4x (and its
    zero-filled image) for reconstruction; a 64^3 block of the MNI template for 3D networks."""
    from mribundles.physics.coils import rss
    from mribundles.physics.fft import ifft2c
    from mribundles.physics.masks import make_mask

    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    image_format = meta["network_data_format"]["inputs"].get("image", {})
    if len(image_format.get("spatial_shape", [])) == 3:
        volume = torch.from_numpy(np.asarray(nib.load(REPO / "common/mribundles/sample_data/mni152_2009a_t1.nii.gz").dataobj, np.float32))
        block = volume[66:130, 80:144, 60:124]
        return (((block - block.mean()) / block.std())[None, None],)
    kspace = torch.from_numpy(np.load(REPO / "common/mribundles/sample_data/pulseq_phantom_gre_32ch_ksp.npy"))[:8]
    mask = make_mask("random1d", kspace.shape[-2:], 4, 0.08, seed=0)
    masked = (kspace * mask).unsqueeze(0)
    if "kspace" in meta["network_data_format"]["inputs"]:
        return masked, mask.unsqueeze(0)
    return (rss(ifft2c(masked)).unsqueeze(1),)


def check_unsafe_weights_refused(bundle: Path, tmp_path: Path) -> None:
    """A model.pt that runs code when unpickled: inference fails and the code never runs,
    because every load uses torch.load(weights_only=True)."""
    import shutil

    copy = tmp_path / bundle.name
    shutil.copytree(bundle, copy, ignore=shutil.ignore_patterns("outputs", "eval"))
    marker = tmp_path / "code_ran"
    torch.save({"model": _RunsCodeWhenUnpickled(str(marker))}, copy / "models" / "model.pt")
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(copy / "configs" / "inference.json"),
           "--output_dir", str(tmp_path / "out")]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0 and "weights_only" in result.stderr
    assert not marker.exists()


class _RunsCodeWhenUnpickled:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@contextmanager
def no_host_copies_or_files():
    """Make copying image data to the host and writing files fail. Small tensors (a 4x4 affine,
    a scalar) may still be read: they are geometry, not image data."""
    import builtins

    original = {"cpu": torch.Tensor.cpu, "numpy": torch.Tensor.numpy, "open": builtins.open, "save": torch.save}

    def guard(name):
        def method(self, *args, **kwargs):
            if self.numel() > 64:
                raise AssertionError(f"Tensor.{name}() of {tuple(self.shape)} inside a stage hand-off")
            return original[name](self, *args, **kwargs)
        return method

    def no_write_open(file, mode="r", *args, **kwargs):
        if any(m in mode for m in "wax+"):
            raise AssertionError(f"file write inside a stage hand-off: {file}")
        return original["open"](file, mode, *args, **kwargs)

    def no_save(*args, **kwargs):
        raise AssertionError("torch.save inside a stage hand-off")

    torch.Tensor.cpu, torch.Tensor.numpy = guard("cpu"), guard("numpy")
    builtins.open, torch.save = no_write_open, no_save
    try:
        yield
    finally:
        torch.Tensor.cpu, torch.Tensor.numpy = original["cpu"], original["numpy"]
        builtins.open, torch.save = original["open"], original["save"]


def shrunk_varnet_bundle(folder: Path, **sizes: int) -> Path:
    """A copy of the VarNet bundle's configs in ``folder`` with its ``network_def`` shrunk to
    ``sizes`` and untrained weights (seed 0) of exactly that network, for tests that need a
    reconstruction bundle but not its quality. Returns ``folder``."""
    from monai.bundle import ConfigParser

    shutil.copytree(REPO / "bundles" / "brain_mri_recon_varnet" / "configs", folder / "configs")
    (folder / "models").mkdir()
    config_file = folder / "configs" / "inference.json"
    config = json.loads(config_file.read_text())
    config["network_def"].update(sizes)
    config_file.write_text(json.dumps(config, indent=4))
    parser = ConfigParser()
    parser.read_config(str(config_file))
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), folder / "models" / "model.pt")
    return folder
