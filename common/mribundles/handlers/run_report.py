"""What a bundle run tells its user: a progress bar, one line when it refuses, a closing summary."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from ignite.engine import Engine, Events

from mribundles.errors import InvalidInputError, find_refusal, quiet_refusals
from mribundles.report import StageEvents, Ticker, has_stage_events, is_rank_zero, progress_bar, progress_enabled, summary_lines

__all__ = ["RunReport", "require_output_folder"]


def require_output_folder(path: str | os.PathLike) -> None:
    """Refuse, before any work, an output folder that cannot be written.

    The folder, or the nearest of its parents that exists, must be a folder the user may write
    into: a file in its place (or in a parent's place), or a read-only folder, raises
    InvalidInputError naming that path.
    """
    path = Path(path)
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        problem = ("the output folder is a file, not a folder" if existing == path
                   else f"is a file, where the output folder {path} needs a folder")
        raise InvalidInputError(problem, existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        problem = ("the output folder is not writable" if existing == path
                   else f"is not writable, so the output folder {path} cannot be made in it")
        raise InvalidInputError(problem, existing)


def _as_bool(value) -> bool:
    """A config or command-line flag: ``true``/``false`` as booleans or as strings."""
    return value.strip().lower() in ("1", "true", "yes") if isinstance(value, str) else bool(value)


def _batch_items(batch) -> int:
    """Items in one iteration's batch: a decollated list of items, a collated dict of tensors
    (their first dimension), or one item (a chain's study)."""
    import torch

    if isinstance(batch, list):
        return len(batch)
    if isinstance(batch, dict):
        tensors = [v for v in batch.values() if isinstance(v, torch.Tensor) and v.ndim > 0]
        return int(tensors[0].shape[0]) if tensors else 1
    return 1


class RunReport:
    """What a bundle run tells its user, as one ignite handler that a config names:

    - before any work, the output folder is checked (`require_output_folder`);
    - while the engine works, a progress bar on stderr counts ``unit``s (slices, volumes,
      studies) with their rate, one bar per epoch; a chain's engine also shows the stage it is
      in (`mribundles.report.StageEvents`). No bar with ``quiet`` or when stderr is not a terminal;
    - when the input is refused (`mribundles.errors.find_refusal`: bad input, an unusable output
      folder), the exception goes on without any log or traceback, so the run ends on the one
      line ``error: FILE: problem``; other exceptions go on to the next handler (StatsHandler);
    - when the run completes, a summary on stdout (`mribundles.report.summary_lines`): seconds,
      the files written to ``output_dir`` (and ``extra_dirs``), and the MLflow run with the
      command to browse it.

    Attach it first in the config's handler list: its EXCEPTION_RAISED handler must run before
    StatsHandler's, which logs every exception with its traceback. A training config attaches it
    to its trainer: one bar per epoch, and a summary of the checkpoints and the final weights.

    Args:
        output_dir: the run's output folder.
        unit: what one item of the engine's data is: "slice", "volume", "study", "pair"; or
            what one iteration is ("batch") where an epoch is a number of iterations drawn with
            replacement rather than a pass over the data.
        quiet: no progress bar.
        extra_dirs: other folders the run writes to (a training's ``ckpt_dir``), checked and
            listed as ``output_dir`` is.
    """

    def __init__(self, output_dir: str | os.PathLike, unit: str = "slice", quiet: bool | str = False,
                 extra_dirs: Sequence[str | os.PathLike] = ()):
        self.output_dir = Path(output_dir)
        self.folders = list(dict.fromkeys([self.output_dir, *(Path(d) for d in extra_dirs)]))
        self.unit = unit
        self.quiet = _as_bool(quiet)
        for folder in self.folders:
            require_output_folder(folder)
        self._start_clock = time.perf_counter()  # from the config's parsing: loading weights counts too
        # what the folder held before: file times come from a coarse clock, so "newer than the
        # start" could miss a file written within milliseconds; a changed stamp cannot
        self._before = self._stamps()
        self._bar = None
        self._ticker = None
        self._count_items = False

    def attach(self, engine: Engine) -> None:
        quiet_refusals(engine.logger)  # ignite logs "terminating due to exception" before any handler
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.exception_raised)
        engine.add_event_handler(Events.EPOCH_STARTED, self.open_bar)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.advance)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.close_bar)
        engine.add_event_handler(Events.COMPLETED, self.summarise_last)
        if has_stage_events(engine):
            engine.add_event_handler(StageEvents.STAGE_STARTED, self.show_stage)

    # --- progress ---------------------------------------------------------------------------
    def _items_per_epoch(self, engine: Engine) -> int | None:
        """Items in one epoch: what the loader's sampler draws, when the epoch is one pass over a
        batching loader whose sampler draws items without replacement (each item of the data,
        or this process's share of it, once); else the epoch's iterations, counted one each
        (a sampler that draws a set number of items with replacement, a loader that does not
        batch, a chain's list of studies)."""
        loader = engine.state.dataloader
        sampler = getattr(loader, "sampler", None)
        self._count_items = (
            getattr(loader, "batch_size", None) is not None
            and hasattr(sampler, "__len__")
            and not getattr(sampler, "replacement", False)
            and hasattr(loader, "__len__")
            and engine.state.epoch_length == len(loader)
        )
        return len(sampler) if self._count_items else engine.state.epoch_length

    def open_bar(self, engine: Engine) -> None:
        self.close_bar()
        if not progress_enabled(self.quiet):
            return
        epochs = engine.state.max_epochs or 1
        desc = f"epoch {engine.state.epoch}/{epochs}" if epochs > 1 else None
        self._bar = progress_bar(self._items_per_epoch(engine), self.unit, desc, self.quiet)
        if self._bar is not None:
            self._ticker = Ticker(self._bar)

    def advance(self, engine: Engine) -> None:
        if self._bar is not None:
            self._bar.update(_batch_items(engine.state.batch) if self._count_items else 1)

    def show_stage(self, engine: Engine) -> None:
        if self._bar is not None:
            name, index, count = engine.state.stage
            self._bar.set_postfix_str(f"{name} ({index}/{count})", refresh=True)

    def close_bar(self, engine: Engine | None = None) -> None:
        if self._ticker is not None:
            self._ticker.stop()
            self._ticker = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # --- the end of a run -------------------------------------------------------------------
    def exception_raised(self, engine: Engine, e: BaseException) -> None:
        """A refusal goes on unlogged; anything else to the next EXCEPTION_RAISED handler, or
        on, if there is none (ignite drops an exception that no handler re-raises)."""
        self.close_bar()
        if find_refusal(e) is not None:
            raise e
        # ignite keeps handlers in Engine._event_handlers; there is no public way to count them.
        handlers = [func for func, *_ in engine._event_handlers[Events.EXCEPTION_RAISED]]
        mine = [i for i, func in enumerate(handlers) if getattr(func, "__self__", None) is self]
        if not mine or mine[-1] == len(handlers) - 1:
            raise e

    def summarise_last(self, engine: Engine) -> None:
        """Schedule the summary after every other COMPLETED handler: writers, RunLineage and
        MONAI's MLflow handler closing the run. ignite calls the handlers of an event from its
        live list, so one added now runs at the end of this same event."""
        if not engine.has_event_handler(self.summarise, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self.summarise)

    def summarise(self, engine: Engine) -> None:
        from mribundles.tracking import tracking_state

        engine.remove_event_handler(self.summarise, Events.COMPLETED)  # once per run
        if not is_rank_zero():
            return
        lines = summary_lines(time.perf_counter() - self._start_clock, self.outputs(), tracking_state(engine), self.output_dir)
        print("\n".join(lines), flush=True)

    def _stamps(self) -> dict[Path, int]:
        """Modification time (ns) of every file in the output folders but the MLflow store and
        hidden (temporary) files."""
        stamps = {}
        for folder in self.folders:
            if not folder.is_dir():
                continue
            for path in folder.rglob("*"):
                relative = path.relative_to(folder).parts
                if relative[0] in ("mlruns", "mlruns.db") or any(part.startswith(".") for part in relative):
                    continue
                if path.is_file():
                    stamps[path] = path.stat().st_mtime_ns
        return stamps

    def outputs(self) -> list[Path]:
        """Files written to the output folders since the handler was made: new or changed."""
        return sorted(path for path, stamp in self._stamps().items() if self._before.get(path) != stamp)

