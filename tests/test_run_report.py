"""What a run tells its user: the progress bar, the closing summary, and refusals without logs."""

from __future__ import annotations

import io
import logging

import pytest
from ignite.engine import Engine, Events

from mribundles.errors import InvalidInputError
from mribundles.handlers import RunReport
from mribundles.handlers.run_report import require_output_folder
from mribundles.report import StageEvents, announce_stage, progress, progress_enabled, summary_lines
from mribundles.tracking import TrackingState


class Terminal(io.StringIO):
    """stderr as a terminal: the bar is drawn into it."""

    def isatty(self) -> bool:
        return True


def test_bar_only_on_a_terminal_and_never_quiet(monkeypatch):
    assert not progress_enabled(stream=io.StringIO())  # a pipe or a log file: no bar
    assert progress_enabled(stream=Terminal()) and not progress_enabled(quiet=True, stream=Terminal())
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert list(progress(range(3), "slice")) == [0, 1, 2]  # no bar, same items


def test_bar_counts_items_with_their_rate_and_shows_the_chain_stage(tmp_path, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)

    def process(engine, item):
        announce_stage(engine, "segmentation", 2, 2)

    engine = Engine(process)
    engine.register_events(*StageEvents)
    RunReport(tmp_path, unit="study").attach(engine)
    engine.run([{"kspace": "a"}, {"kspace": "b"}, {"kspace": "c"}])
    drawn = terminal.getvalue()
    assert "3/3" in drawn and "study/s" in drawn and "segmentation (2/2)" in drawn

    quiet = Terminal()
    monkeypatch.setattr("sys.stderr", quiet)
    engine = Engine(process)
    engine.register_events(*StageEvents)
    RunReport(tmp_path, unit="study", quiet="true").attach(engine)  # as the command line passes it
    engine.run([{"kspace": "a"}])
    assert quiet.getvalue() == ""


def test_summary_comes_last_and_lists_what_the_run_wrote(tmp_path, capsys):
    (tmp_path / "from_an_earlier_run.nii.gz").write_text("old")
    (tmp_path / "mlruns.db").write_text("store")
    engine = Engine(lambda engine, batch: batch)
    RunReport(tmp_path, unit="volume").attach(engine)
    written = tmp_path / "sub" / "brain_seg.nii.gz"
    written.parent.mkdir()
    # attached after RunReport, as writers and MONAI's MLflow handler are: still before the summary
    engine.add_event_handler(Events.COMPLETED, lambda _: written.write_text("labels"))
    engine.run([1, 2])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("done in ") and lines[0].endswith(" s")
    assert lines[1:] == ["outputs (1):", f"  {written}", "MLflow: not tracked (add --tracking mlflow to track it)"]


def test_a_training_counts_slices_or_batches_and_lists_checkpoints_and_weights(tmp_path, monkeypatch, capsys):
    """As a train.json attaches it: slices when each epoch is a pass over the data, iterations
    ("batch") when the sampler draws a set number with replacement; the summary lists the
    checkpoints (output_dir) and the final weights (extra_dirs: the config's ckpt_dir)."""
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    data = [{"image": torch.zeros(1)}] * 6
    cases = [(DataLoader(data, batch_size=2, shuffle=True), "slice", "6/6"),
             (DataLoader(data, batch_size=2, sampler=RandomSampler(data, replacement=True, num_samples=8)), "batch", "4/4")]
    for loader, unit, count in cases:
        eval_dir, models = tmp_path / unit / "eval", tmp_path / unit / "models"
        terminal = Terminal()
        monkeypatch.setattr("sys.stderr", terminal)
        checkpoint, weights = eval_dir / "checkpoints" / "checkpoint_epoch=1.pt", models / "model.pt"

        def save(_engine, files=(checkpoint, weights)):
            for file in files:
                file.parent.mkdir(parents=True, exist_ok=True)
                file.write_text("state")

        engine = Engine(lambda engine, batch: batch)
        RunReport(eval_dir, unit=unit, extra_dirs=[models]).attach(engine)
        engine.add_event_handler(Events.COMPLETED, save)
        engine.run(loader, max_epochs=1)
        assert count in terminal.getvalue() and f"{unit}/s" in terminal.getvalue()
        lines = capsys.readouterr().out.splitlines()
        assert lines[1:4] == ["outputs (2):", f"  {checkpoint}", f"  {weights}"]


def test_tracking_summary_names_the_run_and_how_to_browse_it():
    local = TrackingState("sqlite:////out/mlruns.db", local=True, run_id="abc", experiment_id="1")
    assert summary_lines(2.04, ["/out/a.nii.gz"], local) == [
        "done in 2.0 s", "outputs (1):", "  /out/a.nii.gz",
        "MLflow: run abc tracked locally in sqlite:////out/mlruns.db",
        "  browse it: mlflow ui --backend-store-uri sqlite:////out/mlruns.db",
    ]
    server = TrackingState("http://host:5000", run_id="abc", experiment_id="7", failure="connection refused")
    assert server.summary() == [
        "MLflow: tracking stopped during the run (connection refused); run abc in http://host:5000 is incomplete",
        "  browse it: http://host:5000/#/experiments/7/runs/abc",
    ]
    assert TrackingState("sqlite:////x.db", failure="disk I/O error").summary() == ["MLflow: not tracked (disk I/O error)"]
    many = summary_lines(1, [f"/out/{i}.png" for i in range(25)], None, untracked="add --track to track it")
    assert many[1] == "outputs (25):" and many[-2] == "  ... and 5 more" and many[-1].endswith("(add --track to track it)")


class LoudHandler:
    """Stands for MONAI's StatsHandler: logs every exception, then raises it."""

    def __init__(self):
        self.seen = []

    def __call__(self, engine, e):
        self.seen.append(e)
        raise e


def _failing_engine(error: Exception, tmp_path, later: LoudHandler | None) -> Engine:
    def process(engine, batch):
        raise RuntimeError("applying transform") from error  # as MONAI wraps a transform's error

    engine = Engine(process)
    RunReport(tmp_path).attach(engine)
    if later is not None:
        engine.add_event_handler(Events.EXCEPTION_RAISED, later)
    return engine


def test_refusal_skips_the_loud_handlers_and_ignites_log(tmp_path, caplog):
    loud = LoudHandler()
    engine = _failing_engine(InvalidInputError("k-space contains NaN or Inf values", "/x.npy"), tmp_path, loud)
    with caplog.at_level(logging.INFO), pytest.raises(RuntimeError, match="applying transform"):
        engine.run([1])
    assert loud.seen == [] and not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_other_errors_reach_the_next_handler_and_are_never_dropped(tmp_path, caplog):
    loud = LoudHandler()
    engine = _failing_engine(KeyError("a bug"), tmp_path, loud)
    with caplog.at_level(logging.INFO), pytest.raises(RuntimeError):
        engine.run([1])
    assert len(loud.seen) == 2  # ignite fires EXCEPTION_RAISED for the iteration and for the run
    assert any("terminating due to exception" in r.getMessage() for r in caplog.records)
    with pytest.raises(RuntimeError):  # RunReport alone: ignite would drop what no handler re-raises
        _failing_engine(KeyError("a bug"), tmp_path, None).run([1])


def test_output_folder_refused_before_any_work(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(InvalidInputError, match="the output folder is a file, not a folder") as info:
        RunReport(afile)
    assert info.value.path == str(afile)
    with pytest.raises(InvalidInputError, match=f"where the output folder {afile / 'sub' / 'deeper'} needs a folder"):
        require_output_folder(afile / "sub" / "deeper")
    require_output_folder(tmp_path / "new" / "folder")  # made later by the writers: fine
    assert not (tmp_path / "new").exists()
