"""Importing the library leaves the process as it was: no exception hook, no matplotlib backend,
no environment variable, and no reading of the command line. Programs choose those where they
start, and their users still see a refusal as one line: the `mribundles` command in `main`, a
MONAI bundle run through the hook its config's import installs in that process alone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from monai.bundle import ConfigWorkflow

from bundle_checks import REPO
from mribundles import cli
from mribundles.bundles import COLLECTION_DIR, bundle_root
from mribundles.errors import InvalidInputError

# Imports every module of the library (a `__main__` runs a command, so those are left out), then
# draws a figure the way a bundle's handler does, and prints what changed in the process. The
# libraries it builds on are imported first: what they do on import is theirs (importing MONAI
# imports MLflow, which sets _MLFLOW_TELEMETRY_SESSION_ID).
PROBE = r"""
import importlib, json, os, pkgutil, sys
import matplotlib, mlflow, monai, torch
hook, environ, backend = sys.excepthook, dict(os.environ), matplotlib.rcParams["backend"]
import mribundles
names = [m.name for m in pkgutil.walk_packages(mribundles.__path__, "mribundles.") if not m.name.endswith(".__main__")]
for name in names:
    importlib.import_module(name)
from mribundles.handlers.recon_writer import save_comparison_png
save_comparison_png(sys.argv[1], {"zero-filled": torch.rand(16, 16), "reconstruction": torch.rand(16, 16)})
print(json.dumps({
    "modules": len(names),
    "same_hook": sys.excepthook is hook,
    "environ_changes": sorted(k for k in set(environ) | set(os.environ) if environ.get(k) != os.environ.get(k)),
    "backend_before": backend,
    "backend_after": matplotlib.rcParams["backend"],
}))
"""


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MRIBUNDLES_TRACEBACK", "MLFLOW_TRACKING_URI", "MPLBACKEND")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def test_importing_every_module_and_drawing_a_figure_changes_nothing(tmp_path):
    # A backend the library would never pick: a matplotlib.use("Agg") anywhere would replace it.
    png = tmp_path / "figure.png"
    result = subprocess.run([sys.executable, "-c", PROBE, str(png)], capture_output=True, text=True, timeout=300,
                            env=_clean_env(MPLBACKEND="svg"))
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads(result.stdout.strip().splitlines()[-1])
    assert state["modules"] > 50 and state["same_hook"] and state["environ_changes"] == []
    assert state["backend_before"] == state["backend_after"] == "svg"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # drawn by Agg all the same


# --- the `mribundles` command: refusals in main, without a hook --------------------------------


def _add_command(monkeypatch, run) -> None:
    monkeypatch.setitem(cli.COMMANDS, "probe", cli.Command("raises", lambda parser: None, run))


def _refuse_through_a_wrapper(args):
    try:
        raise InvalidInputError("k-space contains NaN or Inf values", "/data/scan.h5")
    except InvalidInputError as exc:  # as MONAI wraps a config expression's failure
        raise RuntimeError("Failed to evaluate ConfigExpression") from exc


def test_main_reports_a_wrapped_refusal_in_one_line_and_changes_no_hook(monkeypatch, capsys):
    monkeypatch.delenv("MRIBUNDLES_TRACEBACK", raising=False)
    _add_command(monkeypatch, _refuse_through_a_wrapper)
    hook = sys.excepthook
    assert cli.main(["probe"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "error: /data/scan.h5: k-space contains NaN or Inf values\n" and captured.out == ""
    assert sys.excepthook is hook


def test_main_keeps_the_traceback_of_a_bug_and_on_request(monkeypatch):
    def bug(args):
        raise KeyError("a bug, not bad input")

    _add_command(monkeypatch, bug)
    with pytest.raises(KeyError):
        cli.main(["probe"])
    _add_command(monkeypatch, _refuse_through_a_wrapper)
    monkeypatch.setenv("MRIBUNDLES_TRACEBACK", "1")
    with pytest.raises(RuntimeError, match="Failed to evaluate ConfigExpression"):
        cli.main(["probe"])


def test_the_command_refuses_in_one_line(tmp_path):
    missing = tmp_path / "missing.zip"
    result = subprocess.run([sys.executable, "-m", "mribundles", "verify", str(missing)], capture_output=True, text=True,
                            timeout=300, env=_clean_env())
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {missing}")


# --- a MONAI bundle run: the hook, installed by the config's import in that process alone -------


def test_a_monai_bundle_run_reports_a_refusal_in_one_line(tmp_path):
    configs = tmp_path / "tiny" / "configs"
    configs.mkdir(parents=True)
    config = {"imports": ["$import mribundles", "$from mribundles.io import load_kspace"],
              "run": ["$load_kspace('/nonexistent/scan.npy')"]}
    (configs / "inference.json").write_text(json.dumps(config))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(configs / "inference.json")]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=_clean_env())
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: /nonexistent/scan.npy: "), result.stderr[-3000:]
    assert "Traceback" not in result.stderr


# --- bundle_root: the bundle of the config being run, from the workflow, not from sys.argv -----

UNET = "brain_mri_recon_unet"


def _copy_of_unet(tmp_path: Path) -> Path:
    """A copy of the bundle's metadata with a config that only says where its bundle is."""
    configs = tmp_path / "site" / UNET / "configs"
    configs.mkdir(parents=True)
    shutil.copy(COLLECTION_DIR / UNET / "configs" / "metadata.json", configs)
    config = {"imports": ["$import mribundles"], "bundle_root": f"$mribundles.bundles.bundle_root('{UNET}')",
              "initialize": ["$@bundle_root"]}
    (configs / "inference.json").write_text(json.dumps(config))
    return configs.parent


def test_bundle_root_is_the_copy_whose_config_the_workflow_runs(tmp_path, monkeypatch):
    copy = _copy_of_unet(tmp_path)
    monkeypatch.chdir(tmp_path)  # neither the bundle nor a folder holding bundles/
    workflow = ConfigWorkflow(config_file=str(copy / "configs" / "inference.json"), workflow_type=None)
    assert workflow.initialize() == [str(copy.resolve())]


def test_bundle_root_outside_a_workflow_ignores_the_command_line(tmp_path, monkeypatch):
    copy = _copy_of_unet(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["monai.bundle", "run", "--config_file", str(copy / "configs" / "inference.json")])
    assert bundle_root(UNET) == str(COLLECTION_DIR / UNET)
    assert Path(bundle_root(UNET)).parent == REPO / "bundles"
