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

The store is ``MLFLOW_TRACKING_URI`` when set, else a SQLite database in the run's output folder
(MLflow 3 refuses file stores). Tracking never costs a run its outputs, nor minutes:

- at the start, a configured store that cannot be used (a server that does not answer, a
  ``file://`` store, an unknown scheme, a SQLite path that cannot be created) is reported once
  and the run is tracked in the local store instead (`resolve_store`);
- during the run, every MLflow call goes through a `SafeClient`: MLflow's HTTP retries and
  timeout are bounded (`http_limits`), and the first failure is reported once, after which
  nothing more is logged and the run goes on. `TrackingState` records what became of the
  tracking, for the run's closing summary.
"""

from __future__ import annotations

import contextvars
import os
import re
import time
import urllib.request
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ignite.engine import Engine, Events

__all__ = [
    "RunLineage",
    "SafeClient",
    "StageRun",
    "TrackingState",
    "bundle_params",
    "http_limits",
    "resolve_store",
    "sqlite_uri",
    "stage_run",
    "tracked_run",
    "tracking_state",
    "tracking_uri",
]

SERVER_TIMEOUT_S = 3.0

# MLflow retries a failed HTTP request 7 times with exponential back-off and waits 120 s for an
# answer: minutes per call once a server is gone. A run needs neither: one retry after a second,
# and 5 s to answer. A value the user set in the environment is kept.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


@contextmanager
def http_limits() -> Iterator[None]:
    """Bound MLflow's HTTP retries and timeout (`HTTP_LIMITS`) for the calls made inside.

    MLflow reads these variables on every request and offers no other way to set them; they are
    set only for the duration of the block, and only those the user has not set.
    """
    added = {key: value for key, value in HTTP_LIMITS.items() if key not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


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


def _store_problem(uri: str) -> str | None:
    """Why the store ``uri`` cannot track a run, as a phrase (``"does not answer"``), or None.

    A server is asked for its health; any other store is opened and asked for one experiment,
    which also creates a new SQLite database (as the run would).
    """
    if uri.startswith("file:") or "://" not in uri:
        return "is a file store, which MLflow 3 refuses (use sqlite:///PATH or a server)"
    if uri.startswith(("http://", "https://")):
        return None if _server_answers(uri) else "does not answer"
    import mlflow

    try:
        with http_limits():
            mlflow.MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as e:  # MlflowException, an unknown scheme, a path that cannot be created
        return f"cannot be used ({_one_line(e)})"
    return None


@dataclass
class TrackingState:
    """What became of one run's tracking: its store, its MLflow run, and the first failure.

    ``local`` says the store is the SQLite database in the run's own output folder. After a
    failure (`fail`, which warns once) nothing more is logged.
    """

    uri: str
    local: bool = False
    run_id: str | None = None
    experiment_id: str | None = None
    failure: str | None = None

    def fail(self, exc: BaseException) -> None:
        """Record the first failure and warn about it; later ones are consequences, kept quiet."""
        if self.failure is None:
            self.failure = _one_line(exc)
            # warnings, not logging: bundle logging.conf files disable loggers created before them.
            warnings.warn(f"MLflow tracking failed, the run goes on untracked from here: {self.failure}", stacklevel=3)

    def browse_hint(self) -> str:
        """How to look at the run: the ``mlflow ui`` command for a database, the page on a server."""
        if self.uri.startswith(("http://", "https://")):
            if self.run_id and self.experiment_id:
                return f"{self.uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"
            return self.uri
        return f"mlflow ui --backend-store-uri {self.uri}"

    def summary(self) -> list[str]:
        """Lines for a run's closing summary (`mribundles.report.summary_lines`)."""
        where = f"{'locally ' if self.local else ''}in {self.uri}"
        if self.run_id is None:
            return [f"MLflow: not tracked ({self.failure or 'no run was opened'})"]
        if self.failure is not None:
            head = f"MLflow: tracking stopped during the run ({self.failure}); run {self.run_id} {where} is incomplete"
        else:
            head = f"MLflow: run {self.run_id} tracked {where}"
        return [head, f"  browse it: {self.browse_hint()}"]


class SafeClient:
    """An ``MlflowClient`` whose calls never raise and never wait for minutes.

    Every public method runs within `http_limits`; the first exception is recorded in ``state``
    (which warns once) and that call, and every later one, returns None: a run whose server
    dies half-way goes on untracked. Attributes that are not methods pass through.
    """

    def __init__(self, client, state: TrackingState):
        self._client = client
        self.state = state

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if name.startswith("_") or not callable(attr):
            return attr

        def call(*args, **kwargs):
            if self.state.failure is not None:
                return None
            try:
                with http_limits():
                    return attr(*args, **kwargs)
            except Exception as e:  # MlflowException, connection errors, timeouts
                self.state.fail(e)
                return None

        return call


def resolve_store(output_dir: str | os.PathLike) -> TrackingState:
    """The store for a run writing to ``output_dir``, with nothing written to the environment.

    ``MLFLOW_TRACKING_URI`` when it is set and usable (`_store_problem`); otherwise, with one
    warning when a configured store was refused, ``<output_dir>/mlruns.db``.
    """
    local = sqlite_uri(Path(output_dir) / "mlruns.db")
    configured = os.environ.get("MLFLOW_TRACKING_URI")
    if not configured or configured == local:
        return TrackingState(local, local=True)
    problem = _store_problem(configured)
    if problem is None:
        return TrackingState(configured)
    kind = "server" if configured.startswith(("http://", "https://")) else "store"
    warnings.warn(f"MLflow {kind} {configured} {problem}; tracking this run in {local} instead", stacklevel=3)
    return TrackingState(local, local=True)


def tracking_uri(output_dir: str | os.PathLike) -> str:
    """The store of a bundle run writing to ``output_dir`` (the configs' ``tracking_uri`` id).

    As `resolve_store`, for MONAI's ``MLFlowHandler``. That handler reads ``MLFLOW_TRACKING_URI``
    before its ``tracking_uri`` argument, and fails on an unusable store while it is being built,
    before any handler of ours can step in. So when the configured store is refused, the local
    one replaces it in this process's ``MLFLOW_TRACKING_URI``: the one place we write it.
    """
    state = resolve_store(output_dir)
    configured = os.environ.get("MLFLOW_TRACKING_URI")
    if configured and configured != state.uri:
        os.environ["MLFLOW_TRACKING_URI"] = state.uri
    return state.uri


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


def _owners(engine: Engine) -> Iterator[object]:
    """The objects whose methods, or which themselves, are registered on ``engine``'s events.

    ignite keeps handlers in ``Engine._event_handlers``: bound methods (MLFlowHandler registers
    ``start``, ``complete``, ...), callable objects, and for filtered events
    (``EPOCH_COMPLETED(every=2)``) a wrapper whose ``_parent`` refers to the handler.
    """
    for registered in list(engine._event_handlers.values()):
        for func, *_ in registered:
            yield func
            yield getattr(func, "__self__", None)
            parent = getattr(func, "_parent", None)
            yield parent() if callable(parent) else None


def _mlflow_handler(engine: Engine | None):
    """The MLFlowHandler that `--tracking mlflow` attached to ``engine``, if any.

    MONAI appends it to the engine's handlers when the workflow starts, so a config cannot refer
    to it; it is found among the engine's registered handlers (`_owners`).
    """
    from monai.handlers import MLFlowHandler

    if engine is None:  # a stage run outside an engine (benchmarks, notebooks): not tracked
        return None
    return next((owner for owner in _owners(engine) if isinstance(owner, MLFlowHandler)), None)


def _validators(engine: Engine) -> list[Engine]:
    """The evaluators that ``engine``'s ValidationHandler runs (a training run's validation,
    which has an MLFlowHandler of its own)."""
    found = []
    for owner in _owners(engine):
        validator = getattr(owner, "validator", None)
        if isinstance(validator, Engine) and validator is not engine and validator not in found:
            found.append(validator)
    return found


def _guard_start(engine: Engine, handler, state: TrackingState) -> None:
    """Make MONAI's ``handler.start`` on ``engine`` record its run in ``state`` and turn any
    failure into `TrackingState.fail` instead of ending the run.

    ``start`` dereferences what the client returns (experiment, run), so a failing `SafeClient`
    alone would still end it. ignite has no public way to wrap a registered handler, and
    removing one while its event is being fired does not stop this firing from calling it, so
    the entry is replaced in place in ``Engine._event_handlers``, keeping its position.
    """

    def start(engine: Engine) -> None:
        try:
            handler.start(engine)
        except Exception as e:  # MlflowException, MONAI's ValueError for a deleted experiment, ...
            state.fail(e)
        if handler.cur_run is not None and state.run_id is None:
            state.run_id, state.experiment_id = handler.cur_run.info.run_id, handler.cur_run.info.experiment_id

    entries = engine._event_handlers[Events.STARTED]
    for index, (func, args, kwargs) in enumerate(entries):
        if getattr(func, "__self__", None) is handler and getattr(func, "__name__", "") == "start":
            entries[index] = (start, args, kwargs)


def tracking_state(engine: Engine | None) -> TrackingState | None:
    """What became of the MLflow tracking of ``engine``'s run, or None when it is not tracked."""
    handler = _mlflow_handler(engine)
    if handler is None:
        return None
    if isinstance(handler.client, SafeClient):
        return handler.client.state
    run = handler.cur_run  # not guarded by RunLineage: what the handler still knows
    return TrackingState(handler.client.tracking_uri, run_id=None if run is None else run.info.run_id,
                         experiment_id=None if run is None else run.info.experiment_id)


def _fail(client, exc: BaseException) -> None:
    """A tracking failure outside the client's own calls: into its state, or a warning."""
    if isinstance(client, SafeClient):
        client.state.fail(exc)
    else:
        warnings.warn(f"MLflow tracking failed, the run goes on untracked from here: {_one_line(exc)}", stacklevel=3)


class RunLineage:
    """Lineage for the MLflow run of MONAI's ``--tracking mlflow``; does nothing without it.

    When the run starts it puts MONAI's handler (and its validator's, in training) behind a
    `SafeClient`, so that a store failing at the start or half-way is reported once and the run
    goes on untracked (`TrackingState`). Then it logs the bundle's name, version and weights
    sha256 and ``params`` (the acquisition settings); when the run completes, every per-case
    metric the engine's metric handlers saved (``engine.state.metric_details``, one MLflow step
    per case) and the figures and tables written to ``output_dir`` during the run. Attach it
    before MONAI's handler (any place in the config's handler list does: MONAI appends its own).

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
        self.tracking: TrackingState | None = None

    def attach(self, engine: Engine) -> None:
        # STARTED handlers run in the order attached: this one before MLFlowHandler.start, and
        # EPOCH_STARTED comes after every STARTED handler, so the run is open by then.
        engine.add_event_handler(Events.STARTED, self.guard_tracking)
        engine.add_event_handler(Events.EPOCH_STARTED(once=1), self.log_params)
        engine.add_event_handler(Events.COMPLETED, self.log_results)

    def guard_tracking(self, engine: Engine) -> None:
        """Put the MLflow handlers of ``engine`` and of its validators behind one `SafeClient` state."""
        for tracked in (engine, *_validators(engine)):
            handler = _mlflow_handler(tracked)
            if handler is None or isinstance(handler.client, SafeClient):
                continue
            if self.tracking is None:
                uri = handler.client.tracking_uri
                local = self.output_dir is not None and uri == sqlite_uri(self.output_dir / "mlruns.db")
                self.tracking = TrackingState(uri, local=local)
            handler.client = SafeClient(handler.client, self.tracking)
            _guard_start(tracked, handler, self.tracking)

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
        except Exception as e:  # what the client's own guard does not cover: the run itself must go on
            _fail(handler.client, e)


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

    run = client.get_run(run_id)
    if run is None:  # a SafeClient whose store failed: nothing more is logged
        return
    # MLflow parameters are write-once; a resumed run logs the same values again, so skip those.
    new = [mlflow.entities.Param(k, str(v)[:6000]) for k, v in params.items() if k not in run.data.params]
    if new:
        client.log_batch(run_id, params=new)


# The client of the innermost open `tracked_run`: runs nested in it share its store and its
# failure (one warning, then silence), instead of each resolving the store again.
_OPEN_CLIENT: contextvars.ContextVar[SafeClient | None] = contextvars.ContextVar("mribundles_tracked_run", default=None)


def _open_run(client: SafeClient, run_name: str, experiment: str, parent_run_id: str | None, params: Mapping | None) -> str | None:
    """Create the run (and its experiment) and log ``params``; None when tracking has failed."""
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment, _artifact_location(client.tracking_uri))
    if client.state.failure is not None or experiment_id is None:
        return None
    tags = {"mlflow.parentRunId": parent_run_id} if parent_run_id else {}
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    if run is None:
        return None
    if params:
        _log_params(client, run.info.run_id, {k: str(v) for k, v in params.items()})
    if client.state.run_id is None:
        client.state.run_id, client.state.experiment_id = run.info.run_id, experiment_id
    return run.info.run_id


@contextmanager
def tracked_run(
    run_name: str,
    params: Mapping | None = None,
    experiment: str = "mribundles",
    output_dir: str | os.PathLike = ".",
    parent_run_id: str | None = None,
) -> Iterator[tuple]:
    """Open an MLflow run (nested under ``parent_run_id`` when given) and yield ``(client, run_id)``.

    The run ends FINISHED, or FAILED when the body raises. The store is `resolve_store(output_dir)`,
    or that of the enclosing ``tracked_run``. The client is a `SafeClient`: once tracking fails
    its calls do nothing, ``run_id`` is then None, and ``client.state`` says what happened.
    """
    import mlflow

    client = _OPEN_CLIENT.get()
    if client is None:
        state = resolve_store(output_dir)
        client = SafeClient(mlflow.MlflowClient(tracking_uri=state.uri), state)
    run_id = _open_run(client, run_name, experiment, parent_run_id, params)
    token = _OPEN_CLIENT.set(client)
    try:
        yield client, run_id
    except BaseException:
        if run_id:
            client.set_terminated(run_id, "FAILED")
        raise
    finally:
        _OPEN_CLIENT.reset(token)
    if run_id:
        client.set_terminated(run_id, "FINISHED")


class StageRun:
    """A nested MLflow run of one chain stage, or nothing when the chain is not tracked.

    Logging never raises: a tracking failure is reported once and the chain goes on.
    """

    def __init__(self, client=None, run_id: str | None = None):
        self.client, self.run_id = client, run_id

    def _safely(self, method: str, *args, **kwargs) -> None:
        if self.run_id is None:
            return
        try:
            getattr(self.client, method)(self.run_id, *args, **kwargs)
        except Exception as e:  # MlflowException, connection errors (an unguarded client)
            _fail(self.client, e)

    def metric(self, key: str, value: float) -> None:
        self._safely("log_metric", key, float(value))

    def artifact(self, path: str | os.PathLike) -> None:
        self._safely("log_artifact", str(path))


@contextmanager
def stage_run(engine: Engine | None, name: str, params: Mapping | None = None) -> Iterator[StageRun]:
    """A run nested under the run that ``--tracking mlflow`` opened for ``engine``.

    Yields a `StageRun` (a no-op one when the engine is not tracked, or tracking has failed).
    The nested run ends FINISHED, or FAILED when the stage raises.
    """
    handler = _mlflow_handler(engine)
    stage = StageRun()
    if handler is not None and handler.cur_run is not None:
        client = handler.client
        try:
            parent = handler.cur_run.info.run_id
            run = client.create_run(handler.experiment.experiment_id, run_name=name, tags={"mlflow.parentRunId": parent})
            if run is not None:
                stage = StageRun(client, run.info.run_id)
                _log_params(client, stage.run_id, {k: str(v) for k, v in (params or {}).items()})
        except Exception as e:  # tracking must not stop the chain
            _fail(client, e)
    try:
        yield stage
    except BaseException:
        stage._safely("set_terminated", "FAILED")
        raise
    stage._safely("set_terminated", "FINISHED")
