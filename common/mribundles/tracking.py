"""MLflow tracking for bundle runs and for the project's commands.

Two ways in, one store:

- ``python -m monai.bundle run ... --tracking mlflow``: MONAI attaches its ``MLFlowHandler``
  (parameters max_epochs/epoch_length, per-epoch metrics, the executed config as an artifact).
  Our configs add `RunLineage`, which writes into that same run what MONAI does not know: the
  bundle's name, version and weights sha256, the acquisition settings (mask, acceleration,
  seed, device), per-case metrics and the run's figures.
- chains: each stage opens a run nested under the chain's (`stage_run`), so the lineage
  k-space -> reconstruction -> analysis reads as a tree in the MLflow UI;
- our commands (``evaluate-recon --track``, ``acceleration-budget --track``) open runs with
  `tracked_run`: a parent run with one nested run per method or setting.

The store is ``MLFLOW_TRACKING_URI`` when set (a shared server), else a SQLite database in the
run's output folder (MLflow 3 refuses file stores). A server that does not answer is reported
once and the run is tracked locally instead: tracking never costs a run its outputs.
"""

from __future__ import annotations

import os
import re
import time
import urllib.request
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from ignite.engine import Engine, Events

__all__ = ["RunLineage", "StageRun", "bundle_params", "sqlite_uri", "stage_run", "tracked_run", "tracking_uri"]

SERVER_TIMEOUT_S = 3.0


def sqlite_uri(path: str | os.PathLike) -> str:
    """``sqlite:///`` URI of a database file (created by MLflow on first use)."""
    from monai.utils import path_to_sqlite_uri

    return path_to_sqlite_uri(Path(path).resolve())


def _server_answers(uri: str) -> bool:
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=SERVER_TIMEOUT_S) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def tracking_uri(output_dir: str | os.PathLike) -> str:
    """The store for a run writing to ``output_dir``.

    ``MLFLOW_TRACKING_URI`` when it is set and, for an http(s) server, answers its health check;
    otherwise ``<output_dir>/mlruns.db``. When a configured server is down, the fallback is also
    written to ``MLFLOW_TRACKING_URI`` for this process, because MONAI's MLFlowHandler reads the
    variable before its argument and would otherwise retry the dead server for minutes and fail.
    """
    local = sqlite_uri(Path(output_dir) / "mlruns.db")
    configured = os.environ.get("MLFLOW_TRACKING_URI")
    if not configured:
        return local
    if configured.startswith(("http://", "https://")) and not _server_answers(configured):
        # warnings, not logging: bundle logging.conf files disable loggers created before them.
        warnings.warn(f"MLflow server {configured} does not answer; tracking this run in {local} instead", stacklevel=2)
        os.environ["MLFLOW_TRACKING_URI"] = local
        return local
    return configured


def _artifact_location(uri: str) -> str | None:
    """Artifacts of a SQLite store go to ``mlruns/`` beside the database (as MONAI does)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "mlruns").as_uri()
    return None


def bundle_params(bundle_root: str | os.PathLike) -> dict[str, str]:
    """Name and version from a bundle's metadata and the sha256 of its weights, as MLflow params.

    The weights are hashed as they are on disk, not copied from the metadata: lineage must name
    the weights that ran, also when someone retrained them in place.
    """
    from mribundles.bundles import file_sha256, read_metadata

    root = Path(bundle_root)
    meta = read_metadata(root)
    params = {"bundle_name": meta.get("name", root.name), "bundle_version": meta.get("version", "")}
    for rel in meta.get("weights_sha256") or {"models/model.pt": None}:
        if (root / rel).is_file():
            params["weights_sha256" if rel == "models/model.pt" else f"weights_sha256:{rel}"] = file_sha256(root / rel)
    return params


def _mlflow_handler(engine: Engine | None):
    """The MLFlowHandler that `--tracking mlflow` attached to ``engine``, if any.

    MONAI appends it to the engine's handlers when the workflow starts, so a config cannot refer
    to it; ignite keeps handlers in ``Engine._event_handlers`` and MLFlowHandler registers its
    bound ``start`` method there, which is how we find it.
    """
    from monai.handlers import MLFlowHandler

    if engine is None:  # a stage run outside an engine (benchmarks, notebooks): not tracked
        return None
    for handler, *_ in engine._event_handlers.get(Events.STARTED, []):
        owner = getattr(handler, "__self__", None)
        if isinstance(owner, MLFlowHandler):
            return owner
    return None


class RunLineage:
    """Lineage for the MLflow run of MONAI's ``--tracking mlflow``; does nothing without it.

    When the run starts it logs the bundle's name, version and weights sha256 and ``params``
    (the acquisition settings); when it completes, every per-case metric the engine's metric
    handlers saved (``engine.state.metric_details``, one MLflow step per case) and the figures and
    tables written to ``output_dir`` during the run. Tracking errors become Python warnings and
    never stop the run. Attach it before MONAI's handler (any place in the config's handler list
    does: MONAI appends its own), so that it writes before the run is closed.

    Args:
        bundle_root: the bundle folder (its metadata names the bundle and weights).
        params: further parameters, e.g. ``{"mask": "@mask", "acceleration": "@acceleration"}``.
        output_dir: folder whose new files matching ``artifacts`` are logged.
        artifacts: glob patterns of files to log.
    """

    def __init__(
        self,
        bundle_root: str,
        params: Mapping | None = None,
        output_dir: str | None = None,
        artifacts: tuple[str, ...] = ("*.png", "*.csv"),
    ):
        self.bundle_root = bundle_root
        self.params = dict(params or {})
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.artifacts = tuple(artifacts)
        self._started = time.time()

    def attach(self, engine: Engine) -> None:
        # EPOCH_STARTED comes after every STARTED handler, MLFlowHandler.start (which opens the run) included.
        engine.add_event_handler(Events.EPOCH_STARTED(once=1), self.log_params)
        engine.add_event_handler(Events.COMPLETED, self.log_results)

    def log_params(self, engine: Engine) -> None:
        self._started = time.time()
        params = {**bundle_params(self.bundle_root), **{k: str(v) for k, v in self.params.items()}}
        self._with_run(engine, lambda client, run_id, _: _log_params(client, run_id, params))

    def log_results(self, engine: Engine) -> None:
        self._with_run(engine, self._log_results_to)

    def _log_results_to(self, client, run_id: str, engine: Engine) -> None:
        import mlflow
        import torch

        details = getattr(engine.state, "metric_details", None) or {}
        now = int(time.time() * 1000)
        metrics = []
        for name, values in details.items():
            flat = torch.as_tensor(values, dtype=torch.float64).reshape(len(values), -1).mean(1)
            metrics += [mlflow.entities.Metric(f"{name}_per_case", float(v), now, i) for i, v in enumerate(flat)]
        for start in range(0, len(metrics), 1000):  # MLflow's batch limit
            client.log_batch(run_id, metrics=metrics[start : start + 1000])
        for path in self._new_files():
            client.log_artifact(run_id, str(path), artifact_path="outputs")
        for path in _unlogged_executed_config(_handler_artifacts(engine)):
            client.log_artifact(run_id, str(path))

    def _new_files(self) -> list[Path]:
        if self.output_dir is None or not self.output_dir.is_dir():
            return []
        found = {p for pattern in self.artifacts for p in self.output_dir.glob(pattern)}
        return sorted(p for p in found if p.is_file() and p.stat().st_mtime >= self._started - 1)

    def _with_run(self, engine: Engine, log) -> None:
        handler = _mlflow_handler(engine)
        if handler is None or handler.cur_run is None:
            return
        try:
            log(handler.client, handler.cur_run.info.run_id, engine)
        except Exception as e:  # MlflowException, connection errors: the run itself must go on
            warnings.warn(f"MLflow tracking failed, the run continues untracked: {' '.join(str(e).split())}", stacklevel=2)


def _handler_artifacts(engine: Engine) -> tuple:
    """What MONAI's MLFlowHandler on ``engine`` was told to log (the executed config)."""
    handler = _mlflow_handler(engine)
    return () if handler is None else tuple(handler.artifacts)


_BROKEN_CONFIG_PATH = re.compile(r"^(?P<dir>.+) \+ '/(?P<name>config_\d{8}_\d{6}\.json)'$")


def _unlogged_executed_config(artifacts: tuple) -> list[Path]:
    """The executed config that MONAI's handler will fail to log, when ``--output_dir`` is a path.

    MONAI builds ``save_execute_config`` by appending ``" + '/config_<time>.json'"`` to the raw
    ``output_dir`` value. That is an expression only when ``output_dir`` is one (``$@bundle_root
    + ...``); given on the command line as a plain path it becomes the literal string
    ``"/out + '/config_<time>.json'"``, which names no file, and the config goes unlogged.
    """
    found = []
    for artifact in artifacts:
        match = _BROKEN_CONFIG_PATH.match(str(artifact or ""))
        if match and not os.path.exists(artifact):
            path = Path(match["dir"]) / match["name"]
            if path.is_file():
                found.append(path)
    return found


def _log_params(client, run_id: str, params: Mapping[str, str]) -> None:
    import mlflow

    # MLflow parameters are write-once; a resumed run logs the same values again, so skip those.
    logged = client.get_run(run_id).data.params
    new = [mlflow.entities.Param(k, str(v)[:6000]) for k, v in params.items() if k not in logged]
    if new:
        client.log_batch(run_id, params=new)


@contextmanager
def tracked_run(
    run_name: str,
    params: Mapping | None = None,
    experiment: str = "mribundles",
    output_dir: str | os.PathLike = ".",
    parent_run_id: str | None = None,
) -> Iterator[tuple]:
    """Open an MLflow run (nested under ``parent_run_id`` when given) and yield ``(client, run_id)``.

    The run ends FINISHED, or FAILED when the body raises. The store is `tracking_uri(output_dir)`.
    """
    import mlflow

    uri = tracking_uri(output_dir)
    client = mlflow.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment, _artifact_location(uri))
    tags = {"mlflow.parentRunId": parent_run_id} if parent_run_id else {}
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    run_id = run.info.run_id
    if params:
        _log_params(client, run_id, {k: str(v) for k, v in params.items()})
    try:
        yield client, run_id
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")


class StageRun:
    """A nested MLflow run of one chain stage, or nothing when the chain is not tracked.

    Logging never raises: a tracking failure becomes a warning and the chain goes on.
    """

    def __init__(self, client=None, run_id: str | None = None):
        self.client, self.run_id = client, run_id

    def _safely(self, method: str, *args, **kwargs) -> None:
        if self.run_id is None:
            return
        try:
            getattr(self.client, method)(self.run_id, *args, **kwargs)
        except Exception as e:  # MlflowException, connection errors
            warnings.warn(f"MLflow tracking failed, the chain continues: {' '.join(str(e).split())}", stacklevel=3)

    def metric(self, key: str, value: float) -> None:
        self._safely("log_metric", key, float(value))

    def artifact(self, path: str | os.PathLike) -> None:
        self._safely("log_artifact", str(path))


@contextmanager
def stage_run(engine: Engine | None, name: str, params: Mapping | None = None) -> Iterator[StageRun]:
    """A run nested under the run that ``--tracking mlflow`` opened for ``engine``.

    Yields a `StageRun` (a no-op one when the engine is not tracked). The nested run ends
    FINISHED, or FAILED when the stage raises.
    """
    handler = _mlflow_handler(engine)
    stage = StageRun()
    if handler is not None and handler.cur_run is not None:
        try:
            parent = handler.cur_run.info.run_id
            run = handler.client.create_run(handler.experiment.experiment_id, run_name=name, tags={"mlflow.parentRunId": parent})
            stage = StageRun(handler.client, run.info.run_id)
            _log_params(handler.client, stage.run_id, {k: str(v) for k, v in (params or {}).items()})
        except Exception as e:  # tracking must not stop the chain
            warnings.warn(f"MLflow tracking failed, the chain continues: {' '.join(str(e).split())}", stacklevel=3)
    try:
        yield stage
    except BaseException:
        if stage.run_id:
            stage._safely("set_terminated", "FAILED")
        raise
    if stage.run_id:
        stage._safely("set_terminated", "FINISHED")
