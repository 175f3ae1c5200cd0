"""Lineage for the MLflow run of a bundle run (``python -m monai.bundle run ... --tracking mlflow``).

MONAI attaches its ``MLFlowHandler`` (parameters max_epochs/epoch_length, per-epoch metrics, the
executed config as an artifact). Our configs add `RunLineage`, which keeps that tracking from
costing the run (a store that cannot be used is replaced by the local one, every call goes
through a `SafeClient`) and writes into the same run what MONAI does not know: the bundle's
name, version and weights sha256, the acquisition settings, per-case metrics and the figures.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from ignite.engine import Engine, Events

from mribundles.tracking.store import (SafeClient, TrackingState, artifact_location, fail, is_server, local_instead,
                                       local_store, server_answers, store_problem)

__all__ = ["RunLineage", "bundle_params", "log_params", "mlflow_handler", "tracking_state", "weights_params"]


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


def weights_params(weights: str | os.PathLike | None, name: str = "weights") -> dict[str, str]:
    """``{name}_file`` (the path as the config gave it) and ``{name}_sha256`` for the weights file
    ``weights``, as MLflow params; nothing when ``weights`` is None (an ``init_weights`` left unset).

    The sha256 is left out when the file does not exist: the loader that reads it reports that,
    and lineage must not end the run first.
    """
    from mribundles.bundles import file_sha256

    if weights is None:
        return {}
    path = Path(weights)
    params = {f"{name}_file": str(path)}
    if path.is_file():
        params[f"{name}_sha256"] = file_sha256(path)
    return params


def log_params(client, run_id: str, params: Mapping[str, str]) -> None:
    """Log ``params`` to the run, skipping those it already has (a resumed run logs them again)."""
    import mlflow

    run = client.get_run(run_id)
    if run is None:  # a SafeClient whose store failed: nothing more is logged
        return
    # MLflow parameters are write-once; a resumed run logs the same values again, so skip those.
    new = [mlflow.entities.Param(k, str(v)[:6000]) for k, v in params.items() if k not in run.data.params]
    if new:
        client.log_batch(run_id, params=new)


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


def mlflow_handler(engine: Engine | None):
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
    handler = mlflow_handler(engine)
    if handler is None:
        return None
    if isinstance(handler.client, SafeClient):
        return handler.client.state
    run = handler.cur_run  # not guarded by RunLineage: what the handler still knows
    return TrackingState(handler.client.tracking_uri, run_id=None if run is None else run.info.run_id,
                         experiment_id=None if run is None else run.info.experiment_id)


def _move_handler(handler, state: TrackingState) -> None:
    """Point MONAI's ``handler`` at the store ``state.uri``, artifacts beside its database as
    MONAI's own default does; a store that cannot be opened is ``state``'s failure."""
    import mlflow

    try:
        handler.client = mlflow.MlflowClient(tracking_uri=state.uri)
    except Exception as e:  # MlflowException, an OSError creating the database
        state.fail(e)
        return
    handler.artifact_location = artifact_location(state.uri)


def _replace_unopenable_store(local: str) -> tuple[str, str] | None:
    """Replace a set ``MLFLOW_TRACKING_URI`` that names a store which cannot be opened (a
    ``file://`` store, an unknown scheme, a SQLite path that cannot be created) by ``local``,
    for this process. Returns ``(configured, problem)`` when it did, else None.

    A server is left alone: asking it costs seconds when it is down, and MONAI's handler does not
    call it before the run starts, when `RunLineage._store_of` asks it.
    """
    configured = os.environ.get("MLFLOW_TRACKING_URI")
    if not configured or configured == local or is_server(configured):
        return None
    problem = store_problem(configured)
    if problem is None:
        return None
    # The one place the library writes MLFLOW_TRACKING_URI. MONAI's MLFlowHandler takes its store
    # from this variable before its tracking_uri argument, and opens it in its constructor, which
    # raises for these stores while the config is still being parsed: nothing of ours runs between
    # the two but this, so the argument alone cannot steer it. MONAI appends its handlers to the
    # configs' handler lists, so they are built after ours, provided ours comes before a training's
    # ValidationHandler, whose validator (with its own MLFlowHandler) is built with it.
    os.environ["MLFLOW_TRACKING_URI"] = local
    return configured, problem


class RunLineage:
    """Lineage for the MLflow run of MONAI's ``--tracking mlflow``; does nothing without it.

    Built before MONAI's handler, it replaces an ``MLFLOW_TRACKING_URI`` that cannot be opened by
    the local store ``<output_dir>/mlruns.db`` (`_replace_unopenable_store`), which the run then
    reports once, when it starts tracked. When the run starts it puts MONAI's handler (and its
    validator's, in training) behind a `SafeClient`, on the local store when a server does not
    answer, so that a store failing at the start or half-way is reported once and the run goes on
    (`TrackingState`). Then it logs the bundle's name, version and weights sha256, the weights
    files it was given (``weights``, ``init_weights``) with theirs, and ``params`` (the
    acquisition settings); when the run completes, every per-case metric the engine's metric
    handlers saved (``engine.state.metric_details``, one MLflow step per case) and the figures and
    tables written to ``output_dir`` during the run.

    It must be built before any of MONAI's handlers: anywhere in an inference or evaluation
    config's ``handlers`` (MONAI appends its own after it), but in ``train#handlers`` before the
    ``ValidationHandler``, which builds the validator and the MLFlowHandler MONAI appended to
    ``validate#handlers`` (the training configs put it right after ``RunReport``).

    Args:
        bundle_root: the bundle folder (its metadata names the bundle and weights).
        params: further parameters, e.g. ``{"mask": "@mask", "acceleration": "@acceleration"}``.
        output_dir: folder whose new files matching ``artifacts`` are logged; its ``mlruns.db``
            is the local store.
        artifacts: glob patterns of files to log.
        weights: the weights file the run loads (an inference config's ``ckpt_path``, an
            evaluate overlay's ``<ckpt_dir>/model.pt``): logged as ``weights_file``, and its
            sha256 as ``weights_sha256`` in place of the bundle's own, so that a run on other
            weights (adapted ones, another ``--ckpt_dir``) names the weights that ran.
        init_weights: the weights file a training starts from (its ``init_weights``): logged as
            ``init_weights_file`` and ``init_weights_sha256``, nothing when None. Kept apart from
            ``weights``, since a training's ``weights_sha256`` names the bundle's shipped weights,
            which the training may replace.
    """

    def __init__(
        self,
        bundle_root: str,
        params: Mapping | None = None,
        output_dir: str | None = None,
        artifacts: tuple[str, ...] = ("*.png", "*.csv"),
        weights: str | os.PathLike | None = None,
        init_weights: str | os.PathLike | None = None,
    ):
        self.bundle_root = bundle_root
        self.weights = None if weights is None else Path(weights)
        self.init_weights = None if init_weights is None else Path(init_weights)
        self.params = dict(params or {})
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.artifacts = tuple(artifacts)
        self._started = time.time()
        self.tracking: TrackingState | None = None
        self._local = None if self.output_dir is None else local_store(self.output_dir)
        self._replaced = None if self._local is None else _replace_unopenable_store(self._local)

    def attach(self, engine: Engine) -> None:
        # STARTED handlers run in the order attached: this one before MLFlowHandler.start, and
        # EPOCH_STARTED comes after every STARTED handler, so the run is open by then.
        engine.add_event_handler(Events.STARTED, self.guard_tracking)
        engine.add_event_handler(Events.EPOCH_STARTED(once=1), self.log_params)
        engine.add_event_handler(Events.COMPLETED, self.log_results)

    def guard_tracking(self, engine: Engine) -> None:
        """Put the MLflow handlers of ``engine`` and of its validators behind one `SafeClient`
        state, on the local store when theirs cannot be used (`_store_of`)."""
        for tracked in (engine, *_validators(engine)):
            handler = mlflow_handler(tracked)
            if handler is None or isinstance(handler.client, SafeClient):
                continue
            if self.tracking is None:
                self.tracking = self._store_of(handler.client.tracking_uri)
            if handler.client.tracking_uri != self.tracking.uri:
                _move_handler(handler, self.tracking)
            handler.client = SafeClient(handler.client, self.tracking)
            _guard_start(tracked, handler, self.tracking)

    def _store_of(self, uri: str) -> TrackingState:
        """Where the run is tracked: ``uri`` (MONAI's handler's), or the local store, with one
        warning, when the configured one was replaced at construction or is a server that does
        not answer (asked now, when the run starts, not while the config is parsed)."""
        if uri == self._local:
            if self._replaced is not None:  # warned now, when the run is known to be tracked
                return local_instead(*self._replaced, self._local)
            return TrackingState(uri, local=True)
        if self._local is None or not is_server(uri) or server_answers(uri):
            return TrackingState(uri)
        return local_instead(uri, "does not answer", self._local)

    def log_params(self, engine: Engine) -> None:
        self._started = time.time()
        # weights_params after bundle_params: the weights that ran replace the bundle's own sha256
        params = {**bundle_params(self.bundle_root), **{k: str(v) for k, v in self.params.items()},
                  **weights_params(self.weights, "weights"), **weights_params(self.init_weights, "init_weights")}
        self._with_run(engine, lambda client, run_id, _: log_params(client, run_id, params))

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
        handler = mlflow_handler(engine)
        if handler is None or handler.cur_run is None:
            return
        try:
            log(handler.client, handler.cur_run.info.run_id, engine)
        except Exception as e:  # what the client's own guard does not cover: the run itself must go on
            fail(handler.client, e)


def _handler_artifacts(engine: Engine) -> tuple:
    """What MONAI's MLFlowHandler on ``engine`` was told to log (the executed config)."""
    handler = mlflow_handler(engine)
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
