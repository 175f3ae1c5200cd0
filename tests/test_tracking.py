"""Where runs are tracked, and that tracking never costs a run its outputs, nor minutes: a store
that cannot be used at the start, or a server that dies during the run, is reported once."""

from __future__ import annotations

import os
import re
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
from mribundles.errors import InvalidInputError
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


def test_a_bundle_runs_server_is_passed_on_unasked_and_the_environment_left_alone(tmp_path, monkeypatch):
    """MONAI's handler reads the variable itself and calls no server before the run starts;
    then RunLineage asks it (test_bundle_run_with_the_server_down_keeps_outputs_and_tracks_locally)."""
    dead = _closed_port_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert tracking_uri(tmp_path) == dead
    assert not _messages(caught, "MLflow") and os.environ["MLFLOW_TRACKING_URI"] == dead


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


BROKEN = ["sqlite path under a file", "file store", "unknown scheme"]  # stores that cannot even be opened


@pytest.mark.parametrize("case", BROKEN)
def test_bundle_run_with_an_unopenable_store_completes_tracked_locally(case, two_slices, tmp_path, monkeypatch, capsys):
    """MONAI's handler opens the variable's store while the config is parsed; RunLineage, built
    before it, has put the local store in the variable's place: one warning, not the run."""
    configured = UNUSABLE[case](tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", configured)
    out = tmp_path / "out"
    local = sqlite_uri(out / "mlruns.db")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _bundle_run(two_slices, out)
    (message,) = _messages(caught, "tracking this run in")
    assert message.startswith(f"MLflow store {configured} ") and message.endswith(f"tracking this run in {local} instead")
    assert not _messages(caught, "tracking failed")
    assert (out / "phantom_recon.nii.gz").is_file() and (out / "phantom_recon.png").is_file()
    client = mlflow.MlflowClient(tracking_uri=local)
    (run,) = client.search_runs([client.get_experiment_by_name(RVN.name).experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["bundle_name"] == RVN.name
    assert f"MLflow: run {run.info.run_id} tracked locally in {local}" in capsys.readouterr().out
    assert os.environ["MLFLOW_TRACKING_URI"] == local  # replaced for this process, for MONAI's handler


def test_run_lineage_replaces_only_a_store_that_cannot_be_opened(tmp_path, monkeypatch):
    """Building RunLineage puts the local store in the variable's place (MONAI's handler reads it
    first) without a word yet: an untracked run says nothing about MLflow; the warning comes
    when the run starts tracked. A server (asked only then), a usable store and no variable at
    all are left as they are."""
    from mribundles.tracking import RunLineage

    out = tmp_path / "out"
    local = sqlite_uri(out / "mlruns.db")
    for configured in [_closed_port_uri(), f"sqlite:///{tmp_path}/shared.db", *(UNUSABLE[case](tmp_path) for case in BROKEN)]:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", configured)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            lineage = RunLineage(str(RVN), output_dir=str(out))
        assert not _messages(caught, "MLflow")
        if configured.startswith(("http", f"sqlite:///{tmp_path}/shared")):
            assert os.environ["MLFLOW_TRACKING_URI"] == configured
            continue
        assert os.environ["MLFLOW_TRACKING_URI"] == local
        with pytest.warns(UserWarning, match=f"MLflow store {re.escape(configured)} .*tracking this run in {re.escape(local)} instead"):
            assert lineage._store_of(local) == TrackingState(local, local=True)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    RunLineage(str(RVN), output_dir=str(out))
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_a_store_that_cannot_be_opened_is_refused_in_one_line_where_no_run_lineage_came_first(tmp_path, monkeypatch):
    """`tracking_uri` writes nothing. It is what a config reaches when no RunLineage has made its
    fallback first (every train.json now builds RunLineage before the ValidationHandler, whose
    MLflow handler opens the store): the store is refused before any work, saying what to do,
    not with MONAI's traceback."""
    for case in BROKEN:
        configured = UNUSABLE[case](tmp_path)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", configured)
        with pytest.raises(InvalidInputError) as refused:
            tracking_uri(tmp_path / "out")
        message = str(refused.value)
        assert message.startswith(f"MLFLOW_TRACKING_URI {configured} ") and "\n" not in message, case
        assert f"unset it to track the run in {sqlite_uri(tmp_path / 'out' / 'mlruns.db')}" in message
        assert os.environ["MLFLOW_TRACKING_URI"] == configured


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
