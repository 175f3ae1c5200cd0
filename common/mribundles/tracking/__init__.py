"""MLflow tracking for bundle runs and for the project's commands.

Two ways in, one store:

- ``python -m monai.bundle run ... --tracking mlflow``: MONAI attaches its ``MLFlowHandler``;
  our configs add `RunLineage` (`mribundles.tracking.lineage`), which writes into that same run
  the bundle's name, version and weights sha256, the acquisition settings, per-case metrics and
  the run's figures. In a chain, each stage opens a run nested under the chain's (`stage_run`).
- our commands (``evaluate-recon --track``, ``acceleration-budget --track``) open runs with
  `tracked_run` (`mribundles.tracking.runs`): a parent run with one nested run per method or
  setting (`track_evaluation`, `track_budget`).

The store (`mribundles.tracking.store`) is ``MLFLOW_TRACKING_URI`` when set, else a SQLite
database in the run's output folder (MLflow 3 refuses file stores). Tracking never costs a run
its outputs, nor minutes:

- at the start, a configured store that cannot be used (a server that does not answer, a
  ``file://`` store, an unknown scheme, a SQLite path that cannot be created) is reported once
  and the run is tracked in the local store instead: `resolve_store` for our commands, which
  pass the URI on; `RunLineage` in a bundle run, where MONAI's handler reads the variable
  itself (the one place the library writes it, for that process; see
  `mribundles.tracking.lineage`);
- during the run, every MLflow call goes through a `SafeClient`: MLflow's HTTP retries and
  timeout are bounded (`http_limits`), and the first failure is reported once, after which
  nothing more is logged and the run goes on. `TrackingState` records what became of the
  tracking, for the run's closing summary.

Configs name ``mribundles.tracking.RunLineage`` and ``mribundles.tracking.tracking_uri``; the
names below are this package's public interface, wherever they are defined.
"""

from mribundles.tracking.lineage import RunLineage, bundle_params, tracking_state
from mribundles.tracking.runs import StageRun, stage_run, track_budget, track_evaluation, tracked_run
from mribundles.tracking.store import (HTTP_LIMITS, SafeClient, TrackingState, http_limits, resolve_store, sqlite_uri,
                                       tracking_uri)

__all__ = [
    "HTTP_LIMITS",
    "RunLineage",
    "SafeClient",
    "StageRun",
    "TrackingState",
    "bundle_params",
    "http_limits",
    "resolve_store",
    "sqlite_uri",
    "stage_run",
    "track_budget",
    "track_evaluation",
    "tracked_run",
    "tracking_state",
    "tracking_uri",
]
