"""Where a run is tracked, and tracking that never costs a run: stores, limits, a safe client.

- `sqlite_uri`, `tracking_uri`, `resolve_store`: the store is ``MLFLOW_TRACKING_URI`` when it
  is set and usable, else ``<output_dir>/mlruns.db`` (MLflow 3 refuses file stores). URIs are
  returned, never written to the environment (`mribundles.tracking.lineage` holds the one
  exception, for MONAI's handler, and says why).
- `http_limits`: MLflow's HTTP retries and timeout, bounded for the calls made inside.
- `TrackingState`, `SafeClient`: what became of one run's tracking, and a client whose calls
  never raise: the first failure is reported once, then nothing more is logged.
"""

from __future__ import annotations

import os
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HTTP_LIMITS", "SafeClient", "TrackingState", "http_limits", "resolve_store", "sqlite_uri", "tracking_uri"]

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


def one_line(exc: BaseException) -> str:
    """An exception as one short line (MLflow's messages span several)."""
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


def local_store(output_dir: str | os.PathLike) -> str:
    """The store of a run that writes to ``output_dir``: ``<output_dir>/mlruns.db``."""
    return sqlite_uri(Path(output_dir) / "mlruns.db")


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def server_answers(uri: str) -> bool:
    """Whether the MLflow server at ``uri`` reports itself healthy within `SERVER_TIMEOUT_S`."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=SERVER_TIMEOUT_S) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def store_problem(uri: str) -> str | None:
    """Why the store ``uri`` cannot track a run, as a phrase (``"does not answer"``), or None.

    A server is asked for its health; any other store is opened and asked for one experiment,
    which also creates a new SQLite database (as the run would).
    """
    if uri.startswith("file:") or "://" not in uri:
        return "is a file store, which MLflow 3 refuses (use sqlite:///PATH or a server)"
    if is_server(uri):
        return None if server_answers(uri) else "does not answer"
    import mlflow

    try:
        with http_limits():
            mlflow.MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as e:  # MlflowException, an unknown scheme, a path that cannot be created
        return f"cannot be used ({one_line(e)})"
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
            self.failure = one_line(exc)
            # warnings, not logging: bundle logging.conf files disable loggers created before them.
            warnings.warn(f"MLflow tracking failed, the run goes on untracked from here: {self.failure}", stacklevel=3)

    def browse_hint(self) -> str:
        """How to look at the run: the ``mlflow ui`` command for a database, the page on a server."""
        if is_server(self.uri):
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


def fail(client, exc: BaseException) -> None:
    """A tracking failure outside the client's own calls: into its state, or a warning."""
    if isinstance(client, SafeClient):
        client.state.fail(exc)
    else:
        warnings.warn(f"MLflow tracking failed, the run goes on untracked from here: {one_line(exc)}", stacklevel=3)


def local_instead(configured: str, problem: str, local: str) -> TrackingState:
    """Warn once that the configured store is refused, and track in the local one."""
    kind = "server" if is_server(configured) else "store"
    warnings.warn(f"MLflow {kind} {configured} {problem}; tracking this run in {local} instead", stacklevel=4)
    return TrackingState(local, local=True)


def resolve_store(output_dir: str | os.PathLike) -> TrackingState:
    """The store for a run writing to ``output_dir``, with nothing written to the environment.

    ``MLFLOW_TRACKING_URI`` when it is set and usable (`store_problem`); otherwise, with one
    warning when a configured store was refused, ``<output_dir>/mlruns.db``.
    """
    local = local_store(output_dir)
    configured = os.environ.get("MLFLOW_TRACKING_URI")
    if not configured or configured == local:
        return TrackingState(local, local=True)
    problem = store_problem(configured)
    if problem is None:
        return TrackingState(configured)
    return local_instead(configured, problem, local)


def tracking_uri(output_dir: str | os.PathLike) -> str:
    """The store of a bundle run writing to ``output_dir``: the configs' ``tracking_uri`` id,
    which ``--tracking mlflow`` passes to MONAI's ``MLFlowHandler``. Writes nothing.

    ``MLFLOW_TRACKING_URI`` when it is set, else ``<output_dir>/mlruns.db``. A store that
    cannot be opened never gets here in the shipped configs: their `RunLineage` is built before
    any MLFlowHandler (in training, before the ValidationHandler that builds the validator's) and
    has already put the local store in its place. A config that builds a handler before any
    `RunLineage` would have that handler open the variable's store and end the run with MONAI's
    traceback, so there the store is refused here, before any work, in one line
    (`InvalidInputError`) saying how to fix it. A server is not asked here: no client calls it
    before the run starts, and then `RunLineage` tracks the run in the local store if the server
    does not answer.
    """
    from mribundles.errors import InvalidInputError

    local = local_store(output_dir)
    configured = os.environ.get("MLFLOW_TRACKING_URI")
    if not configured or configured == local:
        return local
    problem = None if is_server(configured) else store_problem(configured)
    if problem is not None:
        raise InvalidInputError(f"MLFLOW_TRACKING_URI {configured} {problem}; set it to a usable store, "
                                f"or unset it to track the run in {local}")
    return configured


def artifact_location(uri: str) -> str | None:
    """Artifacts of a SQLite store go to ``mlruns/`` beside the database (as MONAI does)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "mlruns").as_uri()
    return None
