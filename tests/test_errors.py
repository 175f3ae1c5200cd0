"""Bad input surfaces as one line naming the file, even through MONAI's exception wrapping and
ignite's logging: no traceback, nothing half-written."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from bundle_checks import REPO
from mribundles.errors import InvalidInputError, find_input_error, find_refusal


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


RAISE_WRAPPED = (  # a command-line program that installs the hook where it starts
    "from mribundles.errors import install_excepthook\n"
    "install_excepthook()\n"
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
    other = _run("from mribundles.errors import install_excepthook\ninstall_excepthook()\nraise KeyError('a bug, not bad input')")
    assert other.returncode == 1 and "Traceback" in other.stderr and "KeyError" in other.stderr


def test_refusals_are_bad_input_or_an_os_error_naming_a_file(tmp_path):
    assert find_refusal(InvalidInputError("k-space contains NaN", "/x.npy")) == "/x.npy: k-space contains NaN"
    afile = tmp_path / "afile"
    afile.write_text("")
    try:
        try:
            os.mkdir(afile)  # a file where a folder is asked for
        except OSError as exc:
            raise RuntimeError("Failed to evaluate ConfigExpression") from exc  # MONAI's wrapping
    except RuntimeError as wrapped:
        assert find_refusal(wrapped) == f"{afile}: File exists"
    try:
        try:
            os.stat("/nonexistent/file")
        except OSError:
            raise KeyError("a bug while handling it")  # context, not cause: the bug is what matters
    except KeyError as bug:
        assert find_refusal(bug) is None
    assert find_refusal(OSError("no file named")) is None


RVN = REPO / "bundles" / "brain_mri_recon_rvn"
TRUST_BANNER = "parsing config_file "  # MONAI's warning, printed before any code of ours is imported


def _bundle_run(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MRIBUNDLES_TRACEBACK", "MLFLOW_TRACKING_URI")}
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(RVN / "configs" / "inference.json"), *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env={**env, "OMP_NUM_THREADS": "1"})


def _assert_one_error_line(result: subprocess.CompletedProcess, expected: str) -> None:
    """Exit status non-zero; stderr is the one error line, after MONAI's trust banner; no
    traceback and no ERROR record on either stream."""
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == expected, result.stderr[-3000:]
    assert len(lines) == 1 or (len(lines) == 2 and lines[0].startswith(TRUST_BANNER)), result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "Traceback" not in log and " - ERROR - " not in log, log[-3000:]


def test_bundle_refuses_nan_kspace_with_one_line_and_writes_nothing(tmp_path):
    kspace = np.load(REPO / "common/mribundles/sample_data/pulseq_phantom_gre_32ch_ksp.npy")[:4]
    kspace[0, 3, 3] = np.nan
    bad = tmp_path / "nan_kspace.npy"
    np.save(bad, kspace)
    out = tmp_path / "out"
    result = _bundle_run("--kspace_file", str(bad), "--output_dir", str(out))
    _assert_one_error_line(result, f"error: {bad}: k-space contains NaN or Inf values")
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("tracking", [(), ("--tracking", "mlflow")], ids=["untracked", "tracked"])
def test_bundle_refuses_an_output_folder_that_is_a_file(tracking, tmp_path):
    afile = tmp_path / "outputs"
    afile.write_text("not a folder")
    result = _bundle_run("--output_dir", str(afile), *tracking)
    # Untracked, our check words it; tracked, MONAI makes the folder first and the OS words it.
    problem = "File exists" if tracking else "the output folder is a file, not a folder"
    _assert_one_error_line(result, f"error: {afile}: {problem}")
    assert afile.read_text() == "not a folder" and sorted(p.name for p in tmp_path.iterdir()) == ["outputs"]
