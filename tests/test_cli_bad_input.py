"""The catalogue of bad input at the command line: what a user types, run as a real process.

Every case must exit non-zero with the last non-empty line of stderr ``error: ...`` naming the
offending file (its base name) and the problem, print no traceback, and leave ``tmp_path``
(the input, the output folder and the working folder) byte for byte as it was (sha256): no
half-written output, no temporary folder left behind. The commands: ``mribundles
evaluate-recon``, ``acceleration-budget``, ``install``, ``review`` and ``verify``,
``python -m mribundles.adaptation`` and ``python -m monai.bundle run``.

``evaluate-recon`` takes no mask file (``--mask`` names a kind of mask), so a mask of the wrong
shape cannot be given on the command line; a single-coil file is a valid scan, not bad input.

A read-only output folder cannot be exercised as root (the machine and CI run as root, and root
writes through any permission bits): that case is skipped there, with the reason.

Cases already covered elsewhere belong to the catalogue but are not repeated here:

- tests/test_bad_input_catalogue.py and the files its docstring lists: every refusal of the
  readers and writers, for every format, at the library level.
- tests/test_evaluate_recon.py: ``evaluate-recon`` on prospectively undersampled k-space, as a
  process (``test_cli_refuses_prospectively_undersampled``); a missing .h5, NaN k-space and a
  bundle without weights through ``main`` in-process (``test_cli_missing_file``,
  ``test_cli_nan_kspace``, ``test_cli_missing_weights``).
- tests/test_errors.py: a bundle run on NaN k-space, and with an output folder that is a file,
  tracked and untracked.
- tests/test_sharing.py: a truncated and a foreign zip refused by ``install_bundle``
  (``test_truncated_or_foreign_zips_are_refused``); crafted zips (unsafe, duplicate, unlisted
  entries, symbolic links, folders) refused by ``install_bundle`` and by ``review`` through
  ``main`` (``test_unsafe_entries_are_refused_before_anything_is_written``); ``verify`` of an
  unsigned zip against trusted keys (``test_verify_reports_signature_state``).
- tests/test_adaptation.py: the adaptation overlay run as a process on fully sampled data
  (``test_overlay_runs_from_the_command_line_and_refuses_fully_sampled_data``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bundle_checks import REPO
from helpers import file_tree, random_kspace

UNET = REPO / "bundles" / "brain_mri_recon_unet"  # the fastest reconstruction bundle; ships no adapt.json
RVN = REPO / "bundles" / "brain_mri_recon_rvn"
CHAIN = REPO / "bundles" / "brain_mri_recon_seg"
GOOD, GOOD_SLICE = "good.npy", "good_slice.npy"  # valid fully sampled k-space beside every bad input
SHAPE = (1, 4, 80, 112)  # (slice, coil, ky, kx): small, and a size every bundle takes


def _env() -> dict[str, str]:
    """The user's environment, less what would change the outcome: a traceback on request, an
    MLflow server; one thread (as tests/test_errors.py runs bundles)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MRIBUNDLES_TRACEBACK", "MLFLOW_TRACKING_URI")}
    return {**env, "OMP_NUM_THREADS": "1"}


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``python <args>`` in ``cwd`` (inside ``tmp_path``, so that a file written to the working
    folder is caught too)."""
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=_env())


def _assert_one_line_refusal(result: subprocess.CompletedProcess, named: Path, words: tuple[str, ...]) -> None:
    assert result.returncode != 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = [line for line in result.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("error:") and named.name in last, result.stderr[-3000:]
    assert any(w in last.lower() for w in words), last


# --- the bad inputs: each builder makes one at ``path`` and returns the path the user gives --------


def _missing(path: Path) -> Path:
    return path


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _random_bytes(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(7).bytes(4096))
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _a_file(path: Path) -> Path:
    path.write_text("not a folder")
    return path


def _truncated_npy(path: Path) -> Path:
    np.save(path, random_kspace(*SHAPE))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _saved(array: np.ndarray) -> Callable[[Path], Path]:
    def build(path: Path) -> Path:
        np.save(path, array)
        return path

    return build


_NAN = random_kspace(*SHAPE)
_NAN[0, 1, 40, 56] = np.nan
_2D = random_kspace(*SHAPE[-2:])
_ZERO_COILS = np.zeros((1, 0, *SHAPE[-2:]), np.complex64)


# --- the commands: (the path the user gives, tmp_path) -> the arguments after `python` -------------


def _evaluate(kspace: Path, out: Path) -> list:
    return ["-m", "mribundles", "evaluate-recon", "--bundle", UNET, "--kspace", kspace, "--output-dir", out,
            "--cs-iters", "1", "--quiet"]


def evaluate_recon(given: Path, root: Path) -> list:
    return _evaluate(given, root / "out")


def evaluate_recon_into(given: Path, root: Path) -> list:
    return _evaluate(root / GOOD, given)


def acceleration_budget(given: Path, root: Path) -> list:
    return ["-m", "mribundles", "acceleration-budget", "--chain", CHAIN, "--kspace", given, "--out", root / "out",
            "--accelerations", "4", "--quiet"]


def acceleration_budget_into(given: Path, root: Path) -> list:
    return ["-m", "mribundles", "acceleration-budget", "--chain", CHAIN, "--kspace", root / GOOD, "--out", given,
            "--accelerations", "4", "--quiet"]


def install(given: Path, root: Path) -> list:
    return ["-m", "mribundles", "install", given, "--to", root / "site"]


def review(given: Path, root: Path) -> list:
    return ["-m", "mribundles", "review", given]


def verify(given: Path, root: Path) -> list:
    return ["-m", "mribundles", "verify", given]


def bundle_run(given: Path, root: Path) -> list:
    return ["-m", "monai.bundle", "run", "--config_file", RVN / "configs" / "inference.json", "--kspace_file", given,
            "--output_dir", root / "out"]


def adaptation(given: Path, root: Path) -> list:
    return ["-m", "mribundles.adaptation", "--bundle", given, "--kspace", root / GOOD_SLICE]


# (id, command, file name, builder, words in the error line, marks)
CASES = [
    ("evaluate-recon-missing", evaluate_recon, "k.npy", _missing, ("not found",), ()),
    ("evaluate-recon-empty", evaluate_recon, "k.npy", _empty, ("truncated or corrupt",), ()),
    ("evaluate-recon-truncated-npy", evaluate_recon, "k.npy", _truncated_npy, ("truncated or corrupt",), ()),
    ("evaluate-recon-random-bytes-h5", evaluate_recon, "k.h5", _random_bytes, ("not a readable hdf5",), ()),
    ("evaluate-recon-folder-named-npy", evaluate_recon, "x.npy", _folder, ("not a regular file", "no k-space"), ()),
    ("evaluate-recon-nan", evaluate_recon, "k.npy", _saved(_NAN), ("nan or inf",), ()),
    ("evaluate-recon-2d", evaluate_recon, "k.npy", _saved(_2D), ("2 dimensions",), ()),
    ("evaluate-recon-zero-coils", evaluate_recon, "k.npy", _saved(_ZERO_COILS), ("empty",), ()),
    ("evaluate-recon-output-dir-is-a-file", evaluate_recon_into, "outputs", _a_file, ("is a file",), ()),
    ("acceleration-budget-missing", acceleration_budget, "k.npy", _missing, ("not found",), ()),
    ("acceleration-budget-truncated-npy", acceleration_budget, "k.npy", _truncated_npy, ("truncated or corrupt",), ()),
    ("acceleration-budget-nan", acceleration_budget, "k.npy", _saved(_NAN), ("nan or inf",), ()),
    ("acceleration-budget-output-dir-is-a-file", acceleration_budget_into, "outputs", _a_file, ("is a file",), ()),
    *[(f"{cmd.__name__}-{fault}", cmd, "bundle.zip", build, words, ())
      for cmd in (install, review, verify)
      for fault, build, words in (("random-bytes", _random_bytes, ("corrupt or truncated zip",)),
                                  ("empty", _empty, ("corrupt or truncated zip",)),
                                  ("missing", _missing, ("not found",)))],
    ("bundle-run-truncated-npy", bundle_run, "k.npy", _truncated_npy, ("truncated or corrupt",), ()),
    ("bundle-run-zero-coils", bundle_run, "k.npy", _saved(_ZERO_COILS), ("empty",), ()),
    ("adaptation-bundle-without-adapt-json", adaptation, "brain_mri_recon_unet", lambda _: UNET, ("adapt.json",), ()),
]


@pytest.mark.parametrize("command, name, build, words",
                         [pytest.param(*c[1:5], id=c[0], marks=c[5]) for c in CASES])
def test_bad_input_on_the_command_line_is_one_line_and_writes_nothing(tmp_path, command, name, build, words):
    np.save(tmp_path / GOOD, random_kspace(*SHAPE))
    np.save(tmp_path / GOOD_SLICE, random_kspace(*SHAPE[1:]))  # (coil, ky, kx): the adaptation takes one slice
    given = build(tmp_path / name)
    before = file_tree(tmp_path)
    result = _run(command(given, tmp_path), cwd=tmp_path)
    _assert_one_line_refusal(result, given, words)
    assert file_tree(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder: the refusal cannot be exercised")
def test_a_read_only_output_folder_is_refused_before_any_work(tmp_path):
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    try:
        before = file_tree(tmp_path)
        # no --kspace_file: the shipped sample, which the run must not reach
        result = _run(["-m", "monai.bundle", "run", "--config_file", RVN / "configs" / "inference.json",
                       "--output_dir", readonly], cwd=tmp_path)
        _assert_one_line_refusal(result, readonly, ("the output folder is not writable",))
        assert file_tree(tmp_path) == before
    finally:
        readonly.chmod(0o755)
