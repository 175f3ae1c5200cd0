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
import torch
from monai.handlers import MLFlowHandler

from bundle_checks import REPO, workflow
from mribundles.bundles import file_sha256
from mribundles.tracking import sqlite_uri
from mribundles.tracking.lineage import weights_params
from test_seg_bundle import BUNDLE as SEG_BUNDLE
from test_seg_bundle import tiny_seg_dataset  # noqa: F401 (a fixture, used by name)
from test_sr_bundle import BUNDLE, tiny_training, tiny_volumes  # noqa: F401 (a fixture, used by name)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRAINED_WITH_VALIDATION = sorted(p.parent.parent.name for p in (REPO / "bundles").glob("*/configs/train.json")
                                 if '"ValidationHandler"' in p.read_text())
EVALUATED = sorted(p.parent.parent.name for p in (REPO / "bundles").glob("*/configs/evaluate.json"))
STARTED_FROM_WEIGHTS = sorted(p.parent.parent.name for p in (REPO / "bundles").glob("*/configs/train.json")
                              if '"init_weights"' in p.read_text())


def _only_run(uri: str, bundle=BUNDLE):
    client = mlflow.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name(bundle.name).experiment_id])
    return client, run


def _other_weights(bundle, path):
    """The bundle's shipped weights with one tensor changed, saved at ``path``: weights of the
    same network whose sha256 is not the bundle's."""
    state = torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = state[first] + 1.0
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


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


@pytest.mark.parametrize("bundle", EVALUATED)
def test_every_evaluate_overlay_logs_the_weights_file_its_checkpoint_loader_loads(bundle, tmp_path):
    """One ``ckpt_path`` under ``--ckpt_dir``, read by the CheckpointLoader and by RunLineage
    alike, so the lineage names the weights that ran, not the bundle's models/model.pt."""
    root = REPO / "bundles" / bundle
    other = tmp_path / "other"
    wf = workflow(root, ["train.json", "evaluate.json"], "eval", ckpt_dir=str(other), output_dir=str(tmp_path))
    handlers = wf.parser["handlers"]
    (loader,) = [h for h in handlers if h["_target_"] == "CheckpointLoader"]
    (lineage,) = [h for h in handlers if h["_target_"] == "mribundles.tracking.RunLineage"]
    assert loader["load_path"] == lineage["weights"] == "@ckpt_path"
    # the file train.json saves as the best weights: model.pt, or ReconResNet's per sampling
    name = wf.parser.get_parsed_content("weights_file", default="model.pt")
    assert wf.parser.get_parsed_content("ckpt_path") == str(other / name)


def _lineage_of_training(root, **override):
    """The RunLineage that ``root``'s train.json builds with ``override``, built alone: a
    workflow's initialisation would build the trainer and its datasets too."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "train.json"))
    parser.update({"bundle_root": str(root), **override})
    return parser.get_parsed_content("train#handlers#1")


@pytest.mark.parametrize("bundle", STARTED_FROM_WEIGHTS)
def test_every_training_that_can_start_from_weights_gives_them_to_run_lineage(bundle, tmp_path):
    """``init_weights`` goes to RunLineage's own argument (file and sha256, nothing when null),
    not to its ``params``, where null would be logged as the string 'None'."""
    from mribundles.tracking import RunLineage

    root = REPO / "bundles" / bundle
    lineage = json.loads((root / "configs" / "train.json").read_text())["train"]["handlers"][1]
    assert lineage["init_weights"] == "@init_weights" and "init_weights" not in lineage["params"]
    start = tmp_path / "start.pt"
    built = _lineage_of_training(root, init_weights=str(start), output_dir=str(tmp_path))
    assert isinstance(built, RunLineage) and built.init_weights == start and built.weights is None
    assert _lineage_of_training(root, output_dir=str(tmp_path)).init_weights is None


def test_weights_params_name_the_file_and_its_sha256_and_nothing_for_none(tmp_path):
    import hashlib

    weights = tmp_path / "w.pt"
    weights.write_bytes(b"weights")
    assert weights_params(weights, "init_weights") == {"init_weights_file": str(weights),
                                                      "init_weights_sha256": hashlib.sha256(b"weights").hexdigest()}
    # a file that is not there is named (its loader reports it), with no sha256
    assert weights_params(tmp_path / "missing.pt") == {"weights_file": str(tmp_path / "missing.pt")}
    assert weights_params(None, "init_weights") == {}


def test_training_with_a_store_that_cannot_be_opened_warns_once_and_tracks_locally(tiny_volumes, tiny_synth_root, tmp_path, monkeypatch, capsys):
    """The documented fallback, in training: a SQLite path under a file is reported once, the run
    trains, validates and saves, and is tracked (trainer and validator alike) in the local store."""
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    configured = f"sqlite:///{blocker}/mlruns.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", configured)
    override = tiny_training(tiny_volumes, tiny_synth_root, tmp_path)
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


def test_evaluation_is_tracked_as_one_run_of_the_evaluator(tiny_volumes, tiny_synth_root, tmp_path, monkeypatch):
    """train.json + evaluate.json with ``--tracking mlflow`` into a SQLite store named by
    MLFLOW_TRACKING_URI: the shipped weights evaluated, one finished run with their lineage,
    the per-case metrics and the tables the evaluation wrote."""
    store = sqlite_uri(tmp_path / "store" / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    override = {k: v for k, v in tiny_training(tiny_volumes, tiny_synth_root, tmp_path).items() if k != "ckpt_dir"}  # the shipped weights
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
    assert run.data.params["weights_file"] == str(BUNDLE / "models" / "model.pt")
    assert run.data.metrics["val_psnr"] == pytest.approx(evaluator.state.metrics["val_psnr"])
    assert len(client.get_metric_history(run.info.run_id, "val_psnr_per_case")) == 1  # one validation volume
    outputs = {a.path for a in client.list_artifacts(run.info.run_id, "outputs")}
    assert outputs == {"outputs/metrics.csv", "outputs/val_psnr_raw.csv", "outputs/val_ssim_raw.csv"}
    assert (tmp_path / "eval" / "metrics.csv").is_file()


def test_evaluation_with_another_ckpt_dir_names_the_weights_it_loaded(tiny_volumes, tiny_synth_root, tmp_path, monkeypatch):
    """``--ckpt_dir other/``: the run records other/model.pt and its sha256, not the bundle's
    models/model.pt, and the metrics are those of the weights it names."""
    store = sqlite_uri(tmp_path / "store" / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    other = _other_weights(BUNDLE, tmp_path / "other" / "model.pt")
    override = {**tiny_training(tiny_volumes, tiny_synth_root, tmp_path), "ckpt_dir": str(other.parent)}
    evaluate = workflow(BUNDLE, ["train.json", "evaluate.json"], "eval", tracking="mlflow", **override)
    evaluate.run()
    evaluate.finalize()
    _, run = _only_run(store)
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert run.info.status == "FINISHED" and run.data.params["weights_file"] == str(other)
    assert run.data.params["weights_sha256"] == file_sha256(other) != meta["weights_sha256"]["models/model.pt"]
    network = evaluate.parser.get_parsed_content("network")
    loaded = torch.load(other, map_location="cpu", weights_only=True)
    assert all(torch.equal(v, loaded[k]) for k, v in network.state_dict().items())  # it evaluated those weights


def test_training_from_init_weights_records_their_file_and_sha256(tiny_seg_dataset, tiny_synth_root, tmp_path,
                                                                   monkeypatch):
    """``--init_weights start.pt`` on a tiny tissue-segmentation training: the run logs
    init_weights_file and init_weights_sha256 of start.pt, beside the bundle's own weights_sha256."""
    store = sqlite_uri(tmp_path / "store" / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    start = _other_weights(SEG_BUNDLE, tmp_path / "start" / "model.pt")
    override = {"dataset_dir": str(tiny_seg_dataset), "synth_data_root": str(tiny_synth_root),
                "output_dir": str(tmp_path / "out"), "ckpt_dir": str(tmp_path / "models"), "max_epochs": 1,
                "iterations_per_epoch": 1, "batch_size": 1, "val_interval": 1, "patch_size": [32, 32, 32],
                "device": "$torch.device('cpu')", "init_weights": str(start)}
    train = workflow(SEG_BUNDLE, ["train.json"], "train", tracking="mlflow", **override)
    train.run()
    train.finalize()
    _, run = _only_run(store, SEG_BUNDLE)
    meta = json.loads((SEG_BUNDLE / "configs" / "metadata.json").read_text())
    params = run.data.params
    assert run.info.status == "FINISHED" and params["init_weights_file"] == str(start)
    assert params["init_weights_sha256"] == file_sha256(start) != meta["weights_sha256"]["models/model.pt"]
    assert params["weights_sha256"] == meta["weights_sha256"]["models/model.pt"] and "init_weights" not in params
