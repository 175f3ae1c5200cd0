"""Bad input surfaces as one line naming the file, even through MONAI's exception wrapping."""

from __future__ import annotations

import os
import subprocess
import sys

from mribundles.errors import InvalidInputError, find_input_error


def test_message_names_file_then_problem():
    error = InvalidInputError("k-space contains NaN", "/data/scan.h5")
    assert str(error) == "/data/scan.h5: k-space contains NaN" and error.path == "/data/scan.h5"


def test_found_through_cause_and_context_chains():
    original = InvalidInputError("missing dataset 'kspace'", "x.h5")
    try:
        try:
            raise original
        except InvalidInputError as exc:
            raise RuntimeError("applying transform LoadKspaced") from exc
    except RuntimeError:
        try:
            raise RuntimeError("Failed to evaluate ConfigExpression")  # implicit context
        except RuntimeError as outer:
            assert find_input_error(outer) is original
    assert find_input_error(RuntimeError("unrelated")) is None


def _run(code: str, full_traceback: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MRIBUNDLES_TRACEBACK"}
    if full_traceback:
        env["MRIBUNDLES_TRACEBACK"] = "1"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


RAISE_WRAPPED = (
    "import mribundles\n"
    "from mribundles.io import load_kspace\n"
    "try:\n"
    "    load_kspace('/nonexistent/scan.npy')\n"
    "except Exception as exc:\n"
    "    raise RuntimeError('applying transform') from exc\n"
)


def test_uncaught_bad_input_is_one_line_and_nonzero_exit():
    result = _run(RAISE_WRAPPED)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: /nonexistent/scan.npy:")


def test_full_traceback_on_request_and_for_other_errors():
    result = _run(RAISE_WRAPPED, full_traceback=True)
    assert result.returncode == 1 and "Traceback" in result.stderr
    other = _run("import mribundles\nraise KeyError('a bug, not bad input')")
    assert other.returncode == 1 and "Traceback" in other.stderr and "KeyError" in other.stderr
