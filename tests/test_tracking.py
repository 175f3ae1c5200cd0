"""Where runs are tracked, and that tracking never costs a run its outputs, nor minutes: a store
that cannot be used at the start, or a server that dies during the run, is reported once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import warnings

import mlflow
import numpy as np
import pytest

from helpers import mlflow_server
from bundle_checks import REPO, workflow
from mribundles.tracking import (HTTP_LIMITS, SafeClient, TrackingState, bundle_params, http_limits, resolve_store,
                                 sqlite_uri, tracked_run, tracking_uri)

RVN = REPO / "bundles" / "brain_mri_recon_rvn"


def _closed_port_uri() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once the socket closes


def test_default_store_is_sqlite_in_the_output_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(tmp_path) == f"sqlite:///{tmp_path}/mlruns.db"


def test_environment_names_the_store(tmp_path, monkeypatch):
    shared = f"sqlite:///{tmp_path}/shared/mlflow.db"  # usable: MLflow makes the folder and the database
    monkeypatch.setenv("MLFLOW_TRACKING_URI", shared)
    assert tracking_uri(tmp_path / "out") == shared and os.environ["MLFLOW_TRACKING_URI"] == shared


def test_unreachable_server_falls_back_to_the_local_store_with_a_warning(tmp_path, monkeypatch):
    dead = _closed_port_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    with pytest.warns(UserWarning, match=f"MLflow server {dead} does not answer"):
        uri = tracking_uri(tmp_path)
    # The configs' tracking_uri also steers MONAI's MLFlowHandler, which reads the variable first.
    assert uri == f"sqlite:///{tmp_path}/mlruns.db" and os.environ["MLFLOW_TRACKING_URI"] == uri


def _under_a_file(tmp_path) -> str:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    return f"sqlite:///{blocker}/mlruns.db"


UNUSABLE = {  # MLFLOW_TRACKING_URI values that cannot hold a run
    "sqlite path under a file": _under_a_file,
    "file store": lambda tmp_path: f"file://{tmp_path}/mlruns",
    "unknown scheme": lambda tmp_path: "nosuchscheme://host/store",
    "server down": lambda tmp_path: _closed_port_uri(),
}


def _messages(caught, fragment: str) -> list[str]:
    return [str(w.message) for w in caught if fragment in str(w.message)]


@pytest.mark.parametrize("case", UNUSABLE)
def test_unusable_store_falls_back_to_the_local_one_once_and_fast(case, tmp_path, monkeypatch):
    configured = UNUSABLE[case](tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", configured)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = resolve_store(tmp_path / "out")
    assert time.perf_counter() - start < 10
    assert state.uri == sqlite_uri(tmp_path / "out" / "mlruns.db") and state.local
    (message,) = _messages(caught, "tracking this run in")
    assert message.startswith("MLflow ") and configured in message
    assert os.environ["MLFLOW_TRACKING_URI"] == configured  # resolve_store passes URIs, writes nothing


def test_safe_client_warns_once_then_does_nothing():
    class Flaky:
        tracking_uri = "http://server"
        calls = 0

        def log_metric(self, *args):
            Flaky.calls += 1
            assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == HTTP_LIMITS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
            raise ConnectionError("connection refused")

    state = TrackingState("http://server", run_id="abc")
    client = SafeClient(Flaky(), state)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert client.log_metric("abc", "psnr", 30.0) is None and client.log_metric("abc", "ssim", 0.9) is None
    assert Flaky.calls == 1 and state.failure == "connection refused" and client.tracking_uri == "http://server"
    assert len(_messages(caught, "MLflow tracking failed")) == 1


def test_http_limits_hold_inside_only_and_keep_the_users_own(monkeypatch):
    for key in HTTP_LIMITS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    with http_limits():
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1" and os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "30"
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ and os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "30"


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


@pytest.fixture
def two_slices(tmp_path):
    """Two 8-coil 64x64 slices of the shipped real phantom k-space: a bundle run of seconds."""
    kspace = np.load(REPO / "common/mribundles/sample_data/pulseq_phantom_gre_32ch_ksp.npy")[:8]
    path = tmp_path / "phantom.npy"
    np.save(path, np.stack([kspace, kspace]))
    return path


def _bundle_run(kspace, out):
    """The rvn bundle's inference in this process, tracked (as ``--tracking mlflow``)."""
    wf = workflow(RVN, ["inference.json"], "infer", tracking="mlflow", kspace_file=str(kspace), output_dir=str(out), device="cpu")
    wf.run()
    wf.finalize()


def test_bundle_run_with_an_unusable_store_completes_tracked_locally(two_slices, tmp_path, monkeypatch):
    """A bad SQLite path, a file store and an unknown scheme each cost one warning, not the run."""
    out = tmp_path / "out"
    local = mlflow.MlflowClient(tracking_uri=f"sqlite:///{out}/mlruns.db")
    for number, case in enumerate(["sqlite path under a file", "file store", "unknown scheme"], start=1):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", UNUSABLE[case](tmp_path))
        (out / "phantom_recon.nii.gz").unlink(missing_ok=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _bundle_run(two_slices, out)
        assert len(_messages(caught, "tracking this run in")) == 1 and not _messages(caught, "tracking failed"), case
        assert (out / "phantom_recon.nii.gz").is_file(), case
        runs = local.search_runs([local.get_experiment_by_name(RVN.name).experiment_id])
        assert len(runs) == number and {r.info.status for r in runs} == {"FINISHED"}, case
        assert all(r.data.params["bundle_name"] == RVN.name for r in runs)


@pytest.fixture
def dying_server(tmp_path):
    """A real ``mlflow server`` on a free loopback port, in its own process group so that the
    test can kill it, workers included, in the middle of a run."""
    root = tmp_path / "server"
    root.mkdir()
    with mlflow_server(root, timeout=90) as (uri, process):
        yield {"uri": uri, "db": f"sqlite:///{root}/server.db", "kill": lambda: (os.killpg(process.pid, 9), process.wait())}


def test_server_dying_mid_run_costs_one_warning_and_seconds(dying_server, two_slices, tmp_path, monkeypatch, capsys):
    from ignite.engine import Events

    monkeypatch.setenv("MLFLOW_TRACKING_URI", dying_server["uri"])
    out = tmp_path / "out"
    wf = workflow(RVN, ["inference.json"], "infer", tracking="mlflow", kspace_file=str(two_slices), output_dir=str(out), device="cpu")
    killed = []

    def kill(engine):  # after the first slice: the run is open and its parameters are logged
        dying_server["kill"]()
        killed.append(time.perf_counter())

    wf.parser.get_parsed_content("evaluator").add_event_handler(Events.ITERATION_COMPLETED(once=1), kill)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wf.run()
        wf.finalize()
    assert killed and time.perf_counter() - killed[0] < 20  # MLflow's own retries would take minutes
    assert len(_messages(caught, "MLflow tracking failed")) == 1
    assert (out / "phantom_recon.nii.gz").is_file() and (out / "phantom_recon.png").is_file()
    summary = capsys.readouterr().out
    assert "MLflow: tracking stopped during the run" in summary and f"in {dying_server['uri']} is incomplete" in summary
    # what reached the server before it died is there: the run and its lineage
    server = mlflow.MlflowClient(tracking_uri=dying_server["db"])
    (run,) = server.search_runs([server.get_experiment_by_name(RVN.name).experiment_id])
    assert run.data.params["bundle_name"] == RVN.name and run.info.run_id in summary
