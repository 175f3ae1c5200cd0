"""MLflow runs that our own code opens: the commands' runs and the stages of a chain.

- `tracked_run`: a run (nested under a parent when given) for ``evaluate-recon --track`` and
  ``acceleration-budget --track``, built here (`track_evaluation`, `track_budget`: a parent run
  with one nested run per method or setting) so that the command line only parses and calls.
- `stage_run`: each stage of a chain opens a run nested under the chain's (the run that
  ``--tracking mlflow`` opened), so the lineage k-space -> reconstruction -> analysis reads as
  a tree in the MLflow UI.

Logging never raises: a tracking failure is reported once and the work goes on.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from ignite.engine import Engine

from mribundles.tracking.lineage import bundle_params, log_params, mlflow_handler
from mribundles.tracking.store import SafeClient, TrackingState, artifact_location, fail, resolve_store

__all__ = ["StageRun", "stage_run", "track_budget", "track_evaluation", "tracked_run"]

# The client of the innermost open `tracked_run`: runs nested in it share its store and its
# failure (one warning, then silence), instead of each resolving the store again.
_OPEN_CLIENT: contextvars.ContextVar[SafeClient | None] = contextvars.ContextVar("mribundles_tracked_run", default=None)


def _open_run(client: SafeClient, run_name: str, experiment: str, parent_run_id: str | None, params: Mapping | None) -> str | None:
    """Create the run (and its experiment) and log ``params``; None when tracking has failed."""
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment, artifact_location(client.tracking_uri))
    if client.state.failure is not None or experiment_id is None:
        return None
    tags = {"mlflow.parentRunId": parent_run_id} if parent_run_id else {}
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    if run is None:
        return None
    if params:
        log_params(client, run.info.run_id, {k: str(v) for k, v in params.items()})
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


def track_evaluation(evaluate: Callable[[], dict], bundle: str | os.PathLike, figure: str | os.PathLike | None,
                     output_dir: str | os.PathLike) -> tuple[dict, TrackingState]:
    """``evaluate()`` (`mribundles.evaluation.evaluate_recon` with its arguments bound) inside a
    parent run naming the bundle, the data, the settings and the figure, then one nested run per
    method with its scores, per-slice scores and timing. Returns the result and the `TrackingState`."""
    params = bundle_params(bundle)
    with tracked_run(f"evaluate-recon {params['bundle_name']}", params, output_dir=output_dir) as (client, parent):
        result = evaluate()
        for key, value in {"data_file": result["data_file"], **result["settings"]}.items():
            client.log_param(parent, key, value)
        if figure is not None:
            client.log_artifact(parent, str(figure))
        for method, scores in result["methods"].items():
            with tracked_run(method, {"method": method}, output_dir=output_dir, parent_run_id=parent) as (_, run_id):
                for key in ("nmse", "psnr", "ssim", "seconds_per_slice"):
                    client.log_metric(run_id, key, scores[key])
                for key, values in scores["per_slice"].items():
                    for step, value in enumerate(values):
                        client.log_metric(run_id, f"{key}_per_slice", value, step=step)
    return result, client.state


def _budget_params(result: dict) -> dict[str, str]:
    """The chain, the data, and each stage bundle with its weights (``recon_bundle.bundle_name``,
    ...); weights given instead of the bundle's are named with their sha256."""
    from mribundles.bundles import file_sha256, find_bundle

    params = {"chain": result["chain"], "kspace_file": result["kspace_file"], "mask": result["mask"], "seed": result["seed"]}
    for stage in ("recon_bundle", "seg_bundle"):
        params.update({f"{stage}.{key}": value for key, value in bundle_params(find_bundle(result[stage])).items()})
    if result["recon_weights"]:
        params["recon_weights"] = result["recon_weights"]
        params["recon_weights_sha256"] = file_sha256(result["recon_weights"])
    return params


def _budget_metrics(row: dict) -> dict[str, float]:
    """PSNR, SSIM and Dice per class (against the fully sampled result, and the truth when known)."""
    metrics = {"psnr": row["psnr"], "ssim": row["ssim"], "mean_dice": row["mean_dice"]}
    metrics.update({f"dice_{name.replace(' ', '_')}": value for name, value in row["dice"].items()})
    metrics.update({f"dice_truth_{name.replace(' ', '_')}": value for name, value in row.get("dice_truth", {}).items()})
    return metrics


def track_budget(result: dict, out: str | os.PathLike) -> TrackingState:
    """An acceleration budget (`mribundles.chains.budget.acceleration_budget`) as a parent run with
    its parameters (`_budget_params`), ``budget.json`` and ``budget.png`` from ``out``, and one
    nested run per acceleration (`_budget_metrics`). Returns its `TrackingState`."""
    out = Path(out)
    with tracked_run(f"acceleration-budget {result['chain']}", _budget_params(result), output_dir=out) as (client, parent):
        client.log_artifact(parent, str(out / "budget.json"))
        client.log_artifact(parent, str(out / "budget.png"))
        for row in result["rows"]:
            with tracked_run(f"R={row['acceleration']:g}", {"acceleration": row["acceleration"]}, output_dir=out,
                             parent_run_id=parent) as (_, run_id):
                for key, value in _budget_metrics(row).items():
                    client.log_metric(run_id, key, value)
    return client.state


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
            fail(self.client, e)

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
    handler = mlflow_handler(engine)
    stage = StageRun()
    if handler is not None and handler.cur_run is not None:
        client = handler.client
        try:
            parent = handler.cur_run.info.run_id
            run = client.create_run(handler.experiment.experiment_id, run_name=name, tags={"mlflow.parentRunId": parent})
            if run is not None:
                stage = StageRun(client, run.info.run_id)
                log_params(client, stage.run_id, {k: str(v) for k, v in (params or {}).items()})
        except Exception as e:  # tracking must not stop the chain
            fail(client, e)
    try:
        yield stage
    except BaseException:
        stage._safely("set_terminated", "FAILED")
        raise
    stage._safely("set_terminated", "FINISHED")
