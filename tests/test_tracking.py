"""Where runs are tracked, and that a tracking server that is down never costs a run its outputs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import mlflow
import pytest

from bundle_checks import REPO
from mribundles.tracking import bundle_params, tracked_run, tracking_uri


def _closed_port_uri() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once the socket closes


def test_default_store_is_sqlite_in_the_output_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(tmp_path) == f"sqlite:///{tmp_path}/mlruns.db"


def test_environment_names_the_server(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////somewhere/shared.db")
    assert tracking_uri(tmp_path) == "sqlite:////somewhere/shared.db"


def test_unreachable_server_falls_back_to_the_local_store_with_a_warning(tmp_path, monkeypatch):
    dead = _closed_port_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    with pytest.warns(UserWarning, match=f"MLflow server {dead} does not answer"):
        uri = tracking_uri(tmp_path)
    assert uri == f"sqlite:///{tmp_path}/mlruns.db" and os.environ["MLFLOW_TRACKING_URI"] == uri


def test_tracked_run_nests_and_marks_failures(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with tracked_run("parent", {"a": 1}, experiment="exp", output_dir=tmp_path) as (client, parent):
        with pytest.raises(RuntimeError):
            with tracked_run("child", None, experiment="exp", output_dir=tmp_path, parent_run_id=parent):
                raise RuntimeError("stage failed")
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("exp").experiment_id])}
    assert runs["parent"].info.status == "FINISHED" and runs["parent"].data.params == {"a": "1"}
    assert runs["child"].info.status == "FAILED" and runs["child"].data.tags["mlflow.parentRunId"] == parent


def test_bundle_params_name_the_weights():
    params = bundle_params(REPO / "bundles" / "brain_mri_recon_unet")
    assert params["bundle_name"] == "brain_mri_recon_unet" and len(params["weights_sha256"]) == 64


def test_bundle_run_with_the_server_down_keeps_outputs_and_tracks_locally(tmp_path):
    bundle = REPO / "bundles" / "brain_mri_recon_unet"
    out = tmp_path / "out"
    env = {**os.environ, "MLFLOW_TRACKING_URI": _closed_port_uri(), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "inference.json"),
           "--output_dir", str(out), "--tracking", "mlflow"]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "does not answer; tracking this run in" in result.stderr
    assert (out / "sigpy_brain_8ch_poisson_R8_recon.nii.gz").is_file()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{out}/mlruns.db")
    (run,) = client.search_runs([client.get_experiment_by_name("brain_mri_recon_unet").experiment_id])
    assert run.data.params["bundle_name"] == "brain_mri_recon_unet" and run.info.status == "FINISHED"
