"""`report.quiet_progress`: a command's --quiet reaches every bar drawn inside it, and only there."""

from __future__ import annotations

import io
import threading

from mribundles.report import progress, progress_enabled, quiet_progress


class Terminal(io.StringIO):
    """stderr as a terminal: the bar is drawn into it."""

    def isatty(self) -> bool:
        return True


def test_quiet_block_hides_bars_and_is_restored_on_leaving(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    with quiet_progress():
        assert not progress_enabled()
        assert list(progress(range(3), "slice", desc="inner loop")) == [0, 1, 2]  # same items, no bar
        with quiet_progress(False):  # a nested block without --quiet does not undo the outer one
            assert not progress_enabled()
    assert terminal.getvalue() == ""
    assert progress_enabled()  # after the block, bars are back
    with quiet_progress(False):
        assert list(progress(range(2), "slice", desc="inner loop")) == [0, 1]
    assert "inner loop: 100%" in terminal.getvalue() and "2/2" in terminal.getvalue()


def test_quiet_block_does_not_reach_another_thread(monkeypatch):
    """The switch is scoped to the block's own context: a thread started elsewhere keeps its bars."""
    monkeypatch.setattr("sys.stderr", Terminal())
    seen = []
    ready, done = threading.Event(), threading.Event()

    def other():
        ready.wait()
        seen.append(progress_enabled())
        done.set()

    thread = threading.Thread(target=other)
    thread.start()
    with quiet_progress():
        ready.set()
        done.wait(10)
    thread.join()
    assert seen == [True]
