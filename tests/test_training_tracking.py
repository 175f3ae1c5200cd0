"""Training and evaluation configs under ``--tracking mlflow``: a training run falls back from a
store that cannot be opened as an inference run does, and the evaluate overlays can be tracked.

MONAI appends its MLFlowHandler to ``train#handlers``, ``validate#handlers`` and ``handlers``
(`monai.bundle.utils.DEFAULT_MLFLOW_SETTINGS`). The validator's is built with the training's
ValidationHandler, so the trainer's `RunLineage` must be built before that handler to put the
local store in place of a broken ``MLFLOW_TRACKING_URI``; and an evaluate overlay must keep the
evaluator's handlers as a list under ``handlers`` (its ``evaluator`` is a reference, which MONAI
cannot give handlers of its own). The tiny runs use the super-resolution bundle on two crops of
the MNI template (test_sr_bundle's ``tiny_volumes``).
"""

from __future__ import annotations

import json
import warnings

import mlflow
import pytest
from monai.handlers import MLFlowHandler

from bundle_checks import REPO, workflow
from mribundles.tracking import sqlite_uri
from test_sr_bundle import BUNDLE, tiny_volumes  # noqa: F401 (a fixture, used by name)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRAINED_WITH_VALIDATION = sorted(p.parent.parent.name for p in (REPO / "bundles").glob("*/configs/train.json")
                                 if '"ValidationHandler"' in p.read_text())
EVALUATED = sorted(p.parent.parent.name for p in (REPO / "bundles").glob("*/configs/evaluate.json"))


def _override(volumes: dict[str, str], tmp_path) -> dict:
    """One epoch of two iterations on 16^3 patches at 2 mm, validated once, written under ``tmp_path``."""
    return {"train_files": [{"image": volumes["train"]}], "val_files": [{"image": volumes["val"]}],
            "output_dir": str(tmp_path / "eval"), "ckpt_dir": str(tmp_path / "models"), "max_epochs": 1,
            "iterations_per_epoch": 2, "val_interval": 1, "patch_size": [16, 16, 16], "patches_per_volume": 2,
            "factors": [2, 4], "target_spacing": 2.0, "val_factor": 2, "device": "$torch.device('cpu')"}


def _only_run(uri: str):
    client = mlflow.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name(BUNDLE.name).experiment_id])
    return client, run


def _targets(handlers: list) -> list[str]:
    return [h["_target_"] for h in handlers]


def test_the_version_of_monai_tracks_the_ids_these_configs_are_written_for():
    from monai.bundle.utils import DEFAULT_HANDLERS_ID

    assert DEFAULT_HANDLERS_ID == {"trainer": {"id": "train#trainer", "handlers": "train#handlers"},
                                   "validator": {"id": "validate#evaluator", "handlers": "validate#handlers"},
                                   "evaluator": {"id": "evaluator", "handlers": "handlers"}}


@pytest.mark.parametrize("bundle", TRAINED_WITH_VALIDATION)
def test_the_trainers_run_lineage_is_built_before_the_validator(bundle):
    """A config's list is built in order: RunLineage ahead of the ValidationHandler (whose
    validator brings MONAI's MLFlowHandler), RunReport still first."""
    handlers = _targets(json.loads((REPO / "bundles" / bundle / "configs" / "train.json").read_text())["train"]["handlers"])
    assert handlers[:2] == ["mribundles.handlers.RunReport", "mribundles.tracking.RunLineage"]
    assert handlers.index("mribundles.tracking.RunLineage") < handlers.index("ValidationHandler")


def test_the_seven_bundles_that_validate_in_training_are_those_with_an_evaluate_overlay():
    assert len(TRAINED_WITH_VALIDATION) == 7 and EVALUATED == TRAINED_WITH_VALIDATION


@pytest.mark.parametrize("bundle", EVALUATED)
def test_every_evaluate_overlay_takes_monais_evaluator_handler_once(bundle, tmp_path):
    """``--tracking mlflow`` patches train.json + evaluate.json without error; the evaluator runs
    the overlay's ``handlers``, to which MONAI added its evaluator handler (which closes the run)
    after RunLineage."""
    root = REPO / "bundles" / bundle
    wf = workflow(root, ["train.json", "evaluate.json"], "eval", tracking="mlflow", output_dir=str(tmp_path))
    handlers = wf.parser["handlers"]
    assert wf.parser["validate#evaluator#val_handlers"] == "@handlers"
    assert _targets(handlers)[-2:] == ["mribundles.tracking.RunLineage", "MLFlowHandler"]
    assert handlers[-1]["close_on_complete"] is True and _targets(handlers).count("MLFlowHandler") == 1


def test_training_with_a_store_that_cannot_be_opened_warns_once_and_tracks_locally(tiny_volumes, tmp_path, monkeypatch, capsys):
    """The documented fallback, in training: a SQLite path under a file is reported once, the run
    trains, validates and saves, and is tracked (trainer and validator alike) in the local store."""
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    configured = f"sqlite:///{blocker}/mlruns.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", configured)
    override = _override(tiny_volumes, tmp_path)
    local = sqlite_uri(tmp_path / "eval" / "mlruns.db")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train = workflow(BUNDLE, ["train.json"], "train", tracking="mlflow", **override)
        train.run()
        train.finalize()
    (message,) = [str(w.message) for w in caught if "MLflow" in str(w.message)]
    assert message.startswith(f"MLflow store {configured} cannot be used (")
    assert message.endswith(f"; tracking this run in {local} instead")
    assert (tmp_path / "models" / "model.pt").is_file()
    assert (tmp_path / "eval" / "checkpoints" / "checkpoint_epoch=1.pt").is_file()
    _, run = _only_run(local)
    assert run.info.status == "FINISHED" and run.data.params["bundle_name"] == BUNDLE.name
    assert {"train_loss", "val_psnr", "val_ssim"} <= set(run.data.metrics)
    assert f"MLflow: run {run.info.run_id} tracked locally in {local}" in capsys.readouterr().out


def test_evaluation_is_tracked_as_one_run_of_the_evaluator(tiny_volumes, tmp_path, monkeypatch):
    """train.json + evaluate.json with ``--tracking mlflow`` into a SQLite store named by
    MLFLOW_TRACKING_URI: the shipped weights evaluated, one finished run with their lineage,
    the per-case metrics and the tables the evaluation wrote."""
    store = sqlite_uri(tmp_path / "store" / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    override = {k: v for k, v in _override(tiny_volumes, tmp_path).items() if k != "ckpt_dir"}  # the shipped weights
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        evaluate = workflow(BUNDLE, ["train.json", "evaluate.json"], "eval", tracking="mlflow", **override)
        assert evaluate.check_properties() == []
        evaluate.run()
        evaluate.finalize()
    assert not [str(w.message) for w in caught if "MLflow" in str(w.message)]
    evaluator = evaluate.parser.get_parsed_content("validate#evaluator")
    assert sum(isinstance(h, MLFlowHandler) for h in evaluate.parser.get_parsed_content("handlers")) == 1
    client, run = _only_run(store)
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert run.info.status == "FINISHED" and run.data.params["weights_sha256"] == meta["weights_sha256"]["models/model.pt"]
    assert run.data.metrics["val_psnr"] == pytest.approx(evaluator.state.metrics["val_psnr"])
    assert len(client.get_metric_history(run.info.run_id, "val_psnr_per_case")) == 1  # one validation volume
    outputs = {a.path for a in client.list_artifacts(run.info.run_id, "outputs")}
    assert outputs == {"outputs/metrics.csv", "outputs/val_psnr_raw.csv", "outputs/val_ssim_raw.csv"}
    assert (tmp_path / "eval" / "metrics.csv").is_file()
