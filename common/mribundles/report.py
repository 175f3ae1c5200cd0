"""What a run tells its user: a progress bar while it works, and a closing summary.

- `progress_bar` / `progress`: tqdm bars on stderr, shown only on a terminal and never with
  ``quiet``, so test logs, CI and redirected output stay clean. tqdm shows the rate in the
  bar's own unit (``2.5 slice/s``, or ``12.3s/volume`` when slower than one a second).
- `quiet_progress`: no bar at all inside a block, whichever library loop would draw one: how a
  command's ``--quiet`` reaches loops it does not call directly (a stage's slices, say).
- `StageEvents` / `announce_stage`: a chain's process function names the stage it starts, as
  an ignite event, so that the bar of the chain's engine shows it (``segmentation (2/2)``).
- `summary_lines`: the closing summary of a run: seconds taken, the files written, and where
  the run is tracked with the command to browse it (`mribundles.tracking.TrackingState`).

The ignite handler that puts these on a bundle's engine is `mribundles.handlers.RunReport`.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from ignite.engine import Engine, EventEnum

__all__ = ["StageEvents", "Ticker", "announce_stage", "has_stage_events", "is_rank_zero", "progress", "progress_bar",
           "progress_enabled", "quiet_progress", "summary_lines"]

MAX_LISTED_OUTPUTS = 20  # a run over a folder of studies would otherwise print hundreds of lines


def is_rank_zero() -> bool:
    """True outside distributed runs and on their rank 0, which alone talks to the user."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized() and dist.get_rank() > 0)


# Set only inside `quiet_progress`: a context variable, so it is scoped to the block (and to its
# thread or task) and restored on leaving it, not a switch left on for the rest of the process.
_QUIET: ContextVar[bool] = ContextVar("mribundles_quiet_progress", default=False)


@contextmanager
def quiet_progress(quiet: bool = True) -> Iterator[None]:
    """Inside the block, with ``quiet``, `progress_enabled` says no: a command's ``--quiet``
    hides the bars of every loop it runs, including those of library calls that take no
    ``quiet`` of their own. ``quiet=False`` changes nothing (an enclosing block still holds)."""
    token = _QUIET.set(_QUIET.get() or bool(quiet))
    try:
        yield
    finally:
        _QUIET.reset(token)


def progress_enabled(quiet: bool = False, stream=None) -> bool:
    """Whether to draw a progress bar: not ``quiet`` nor inside `quiet_progress`, ``stream``
    (stderr) is a terminal, rank 0."""
    stream = sys.stderr if stream is None else stream
    return not (quiet or _QUIET.get()) and bool(getattr(stream, "isatty", lambda: False)()) and is_rank_zero()


def progress_bar(total: int | None, unit: str, desc: str | None = None, quiet: bool = False):
    """A tqdm bar on stderr counting ``unit``s, or None when `progress_enabled` says no."""
    if not progress_enabled(quiet):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit, desc=desc, file=sys.stderr, dynamic_ncols=True, leave=True)


class Ticker:
    """Redraws ``bar`` every ``interval`` seconds from a daemon thread until `stop`.

    tqdm redraws only when the count moves; while one long item is processed (a chain's study
    spends minutes in one stage) the elapsed time would stand still and the run look hung.
    """

    def __init__(self, bar, interval: float = 1.0):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(bar, interval), daemon=True)
        self._thread.start()

    def _run(self, bar, interval: float) -> None:
        while not self._stop.wait(interval):
            bar.refresh()  # tqdm takes its own lock: safe beside the engine's updates

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def progress(items: Iterable, unit: str, total: int | None = None, desc: str | None = None, quiet: bool = False) -> Iterator:
    """``items``, one at a time, advancing a bar (`progress_bar`) by one ``unit`` each.

    ``total`` defaults to ``len(items)`` when it has one.
    """
    if total is None and hasattr(items, "__len__"):
        total = len(items)
    bar = progress_bar(total, unit, desc, quiet)
    if bar is None:
        yield from items
        return
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()


class StageEvents(EventEnum):
    """Fired by a chain's process function when one of its stages starts; ``engine.state.stage``
    is then ``(name, index, count)``, index from 1."""

    STAGE_STARTED = "stage_started"


def has_stage_events(engine: Engine) -> bool:
    """Whether ``engine`` fires `StageEvents` (a chain's engine registers them)."""
    # ignite has no public query for registered events; _allowed_events is where it keeps them.
    return StageEvents.STAGE_STARTED in getattr(engine, "_allowed_events", ())


def announce_stage(engine: Engine | None, name: str, index: int, count: int) -> None:
    """Tell ``engine``'s handlers that stage ``index`` of ``count`` (``name``) starts.

    Nothing happens without an engine (a chain called directly) or when the engine does not
    register `StageEvents`.
    """
    if engine is None or not has_stage_events(engine):
        return
    engine.state.stage = (name, index, count)
    engine.fire_event(StageEvents.STAGE_STARTED)


def _listed(outputs: Sequence[str | os.PathLike]) -> list[str]:
    shown = [f"  {path}" for path in outputs[:MAX_LISTED_OUTPUTS]]
    if len(outputs) > MAX_LISTED_OUTPUTS:
        shown.append(f"  ... and {len(outputs) - MAX_LISTED_OUTPUTS} more")
    return shown


def summary_lines(
    seconds: float,
    outputs: Sequence[str | os.PathLike],
    tracking=None,
    output_dir: str | os.PathLike | None = None,
    untracked: str = "add --tracking mlflow to track it",
) -> list[str]:
    """The closing summary of a run, one line per item.

    Args:
        seconds: how long the run took.
        outputs: the files it wrote (paths).
        tracking: a `mribundles.tracking.TrackingState`, or None when the run was not tracked.
        output_dir: where outputs were expected, named when none were written.
        untracked: how to track such a run, said when it was not.
    """
    lines = [f"done in {seconds:.1f} s"]
    if outputs:
        lines += [f"outputs ({len(outputs)}):", *_listed(list(outputs))]
    else:
        lines.append("no output files written" + (f" in {Path(output_dir)}" if output_dir is not None else ""))
    lines += tracking.summary() if tracking is not None else [f"MLflow: not tracked ({untracked})"]
    return lines
