"""`evaluate_recon` and `mribundles evaluate-recon` on tiny k-space simulated from real images.

The bundle is a stand-in: the VarNet bundle's configs with freshly initialised weights, so the
test neither depends on the trained checkpoint nor waits for its training.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bundle_checks import shrunk_varnet_bundle
from mribundles import sample_data
from mribundles.evaluation import evaluate_recon
from mribundles.io import save_kspace
from mribundles.metrics import nmse
from mribundles.physics import ifft2c, make_mask, rss, simulate_multicoil_kspace

REPO = Path(__file__).resolve().parents[1]
CS_ITERS = 30
METHODS = ("brain_mri_recon_varnet", "zero-filled", "l1-wavelet")


@pytest.fixture(scope="module")
def kspace_volume() -> torch.Tensor:
    """(2, 4, 80, 112) complex64, fully sampled, simulated from two real T1 slices."""
    images = torch.from_numpy(np.load(sample_data.path("voxelmorph_t1_axial_4slices_80x112.npy")))
    return torch.stack([simulate_multicoil_kspace(images[i], num_coils=4, seed=i)[0] for i in (1, 2)])


@pytest.fixture(scope="module")
def kspace_files(kspace_volume, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("kspace")
    files = {suffix: folder / f"brain{suffix}" for suffix in (".npy", ".h5")}
    for path in files.values():
        save_kspace(path, kspace_volume)
    return files


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """The VarNet bundle's configs, shrunk to 2 cascades of 4 channels, with untrained weights
    of exactly that network_def (evaluate_recon builds the network from the config)."""
    return shrunk_varnet_bundle(tmp_path_factory.mktemp("bundle") / "brain_mri_recon_varnet", num_cascades=2, chans=4, sens_chans=2)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mribundles", "evaluate-recon", *args],
        capture_output=True, text=True, timeout=300,
    )


def test_evaluate_recon_metrics(bundle, kspace_files, kspace_volume):
    result = evaluate_recon(bundle, kspace_files[".h5"], mask="random1d", acceleration=4, seed=3, cs_iters=CS_ITERS,
                            keep_images=True)
    assert result["num_slices"] == 2
    assert result["settings"]["center_fraction"] == pytest.approx(0.08)
    assert tuple(result["methods"]) == METHODS
    for metrics in result["methods"].values():
        assert all(math.isfinite(metrics[k]) for k in ("nmse", "psnr", "ssim", "seconds_per_slice"))

    # zero-filled NMSE from the library directly, with the mask the bundle's transform draws
    mask = make_mask("random1d", kspace_volume.shape[-2:], 4, 0.08, 3)
    target, zero_filled = rss(ifft2c(kspace_volume)), rss(ifft2c(kspace_volume * mask))
    assert result["methods"]["zero-filled"]["nmse"] == pytest.approx(nmse(target, zero_filled), abs=1e-6)
    # the kept volumes are the ones scored
    assert tuple(result["images"]) == ("reference", *METHODS)
    torch.testing.assert_close(result["images"]["reference"], target, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result["images"]["zero-filled"], zero_filled, rtol=1e-5, atol=1e-6)
    assert nmse(target, result["images"]["l1-wavelet"]) == pytest.approx(result["methods"]["l1-wavelet"]["nmse"])

    # CS at 4x beats zero-filling: SSIM 0.72 against 0.63 with this seed and 30 iterations,
    # margins of 0.09-0.18 over seeds 0-5 of random1d and equispaced1d masks (ESPIRiT maps)
    assert result["methods"]["l1-wavelet"]["ssim"] > result["methods"]["zero-filled"]["ssim"] + 0.02


def test_cli_json(bundle, kspace_files):
    run = _cli("--bundle", str(bundle), "--kspace", str(kspace_files[".npy"]), "--mask", "equispaced1d",
               "--acceleration", "8", "--cs-iters", "5", "--json")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["data_file"] == str(kspace_files[".npy"])
    assert result["settings"]["mask"] == "equispaced1d" and result["settings"]["center_fraction"] == pytest.approx(0.04)
    assert set(result["methods"]) == set(METHODS)
    assert all(math.isfinite(v) for m in result["methods"].values() for k, v in m.items() if k != "per_slice")
    assert all(len(v) == 2 and all(map(math.isfinite, v)) for m in result["methods"].values() for v in m["per_slice"].values())


def test_cli_table(bundle, kspace_files, capsys):
    from mribundles.cli import main

    code = main(["evaluate-recon", "--bundle", str(bundle), "--kspace", str(kspace_files[".h5"]), "--cs-iters", "3"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[3].split() == ["method", "NMSE", "PSNR", "SSIM", "s/slice"]
    assert [line.split()[0] for line in lines[4:]] == list(METHODS)


def test_cli_quiet_hides_the_progress_bar_on_a_terminal(bundle, kspace_files, capsys, monkeypatch):
    """On a terminal the slices' bar is drawn on stderr; --quiet hides it and keeps the table
    and the closing summary."""
    import io

    from mribundles.cli import main

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    args = ["evaluate-recon", "--bundle", str(bundle), "--kspace", str(kspace_files[".h5"]), "--cs-iters", "2"]
    for quiet in (False, True):
        terminal = Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        assert main(args + ["--quiet"] * quiet) == 0
        drawn, table = terminal.getvalue(), capsys.readouterr().out
        assert table.splitlines()[3].split() == ["method", "NMSE", "PSNR", "SSIM", "s/slice"]
        assert "\ndone in " in drawn and "MLflow: not tracked" in drawn  # the summary either way
        bar = "brain_mri_recon_varnet: 100%" in drawn and "2/2" in drawn and ("slice/s" in drawn or "s/slice" in drawn)
        assert bar != quiet, drawn


def _assert_input_error(run: subprocess.CompletedProcess, *fragments: str) -> None:
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_cli_refuses_prospectively_undersampled(bundle):
    path = sample_data.path("sigpy_brain_8ch_poisson_R8.npy")
    _assert_input_error(_cli("--bundle", str(bundle), "--kspace", path), path, "fully sampled")


def _assert_main_error(capsys, bundle: Path, path: str) -> None:
    """In-process (no interpreter start-up): exit code 2 and one line naming the file."""
    from mribundles.cli import main

    assert main(["evaluate-recon", "--bundle", str(bundle), "--kspace", path]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1 and lines[0].startswith("error: ") and path in lines[0]


def test_cli_missing_file(bundle, tmp_path, capsys):
    _assert_main_error(capsys, bundle, str(tmp_path / "missing.h5"))


def test_cli_nan_kspace(bundle, kspace_volume, tmp_path, capsys):
    path = tmp_path / "nan.npy"
    array = kspace_volume.numpy().copy()
    array[0, 0, 5, 5] = np.nan
    np.save(path, array)
    _assert_main_error(capsys, bundle, str(path))


def test_cli_missing_weights(bundle, kspace_files, tmp_path, capsys):
    empty = tmp_path / "no_weights"
    shutil.copytree(bundle / "configs", empty / "configs")
    from mribundles.cli import main

    assert main(["evaluate-recon", "--bundle", str(empty), "--kspace", str(kspace_files[".npy"])]) == 2
    assert "model.pt" in capsys.readouterr().err


def test_refuses_mask_none(bundle, kspace_files):
    with pytest.raises(ValueError, match="none"):
        evaluate_recon(bundle, kspace_files[".npy"], mask="none")


def test_cli_track_logs_a_parent_run_with_one_nested_run_per_method(bundle, kspace_files, tmp_path, monkeypatch, capsys):
    import mlflow

    from mribundles.cli import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "eval"
    code = main(["evaluate-recon", "--bundle", str(bundle), "--kspace", str(kspace_files[".h5"]), "--cs-iters", "3",
                 "--track", "--output-dir", str(out), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{out}/mlruns.db")
    runs = client.search_runs([client.get_experiment_by_name("mribundles").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert parent.info.run_name == "evaluate-recon brain_mri_recon_varnet" and set(children) == set(METHODS)
    assert parent.data.params["weights_sha256"] == __import__("mribundles").bundles.file_sha256(bundle / "models" / "model.pt")
    assert parent.data.params["mask"] == "random1d" and parent.data.params["data_file"] == str(kspace_files[".h5"])
    assert [a.path for a in client.list_artifacts(parent.info.run_id)] == ["brain_mri_recon_varnet_random1d_R4.png"]
    for method, run in children.items():
        assert run.data.metrics["psnr"] == pytest.approx(result["methods"][method]["psnr"])
        history = client.get_metric_history(run.info.run_id, "ssim_per_slice")
        assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(result["methods"][method]["per_slice"]["ssim"])
