"""The reconstruction -> segmentation chain: stages by reference, one device, nested lineage."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from bundle_checks import REPO, check_metadata, no_host_copies_or_files, workflow
from mribundles.chains import PipelineChain, ReconStage, SegStage
from mribundles.errors import InvalidInputError
from mribundles.io import write_fastmri
from mribundles.physics.simulate import simulate_multicoil_kspace
from mribundles.sample_data import path as sample_path

BUNDLE = REPO / "bundles" / "brain_mri_recon_seg"
RECON = "brain_mri_recon_unet"  # the faster reconstruction bundle keeps these tests quick


@pytest.fixture(scope="module")
def multislice_kspace(tmp_path_factory) -> Path:
    """12 axial planes (every 3rd, 2 mm) of the real MNI T1, 4-coil k-space, with its affine."""
    template = nib.load(sample_path("mni152_2009a_t1.nii.gz"))
    volume = np.asarray(template.dataobj, np.float32)[::2, ::2] / 255.0  # 2 mm in-plane
    planes = np.arange(50, 86, 3)
    kspace = torch.stack([simulate_multicoil_kspace(torch.from_numpy(volume[:, :, z].T.copy()), 4, seed=int(z))[0] for z in planes])
    affine = template.affine @ np.array([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 3.0, 50.0], [0, 0, 0, 1]])
    path = tmp_path_factory.mktemp("chain") / "mni_slab.h5"
    write_fastmri(path, kspace, attrs={"affine": affine, "kspace_origin": "simulated from the real MNI152 T1"})
    return path


def _chain_workflow(kspace: Path, out: Path, **override):
    # device as the command line gives it: a plain string
    return workflow(BUNDLE, ["inference.json"], "infer", kspace_file=str(kspace), output_dir=str(out),
                    recon_bundle=RECON, device="cpu", **override)


def test_metadata_valid_against_shipped_schema():
    check_metadata(BUNDLE)


def test_chain_writes_every_stage_on_the_acquisition_grid(multislice_kspace, tmp_path):
    wf = _chain_workflow(multislice_kspace, tmp_path)
    wf.run()
    wf.finalize()
    affine = np.asarray(__import__("h5py").File(multislice_kspace)["/"].attrs["affine"])
    recon = nib.load(tmp_path / "mni_slab_recon.nii.gz")
    seg = nib.load(tmp_path / "mni_slab_seg.nii.gz")
    assert recon.shape == seg.shape == (99, 117, 12)
    assert np.allclose(recon.affine, affine) and np.allclose(seg.affine, affine)
    labels = np.asarray(seg.dataobj)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2, 3} and (labels == 3).any()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("run_")) == [
        "mni_slab_overview.png", "mni_slab_recon.nii.gz", "mni_slab_seg.nii.gz"]
    # Three columns, as the stages that ran choose: zero-filled, reconstructed, labels over it
    # (3.3 inches each at 80 dpi, two rows of 3.5 inches).
    figure = __import__("matplotlib.image").image.imread(tmp_path / "mni_slab_overview.png")
    assert figure.shape[:2] == (560, 792)


def test_zero_filled_volume_is_what_the_network_saw(multislice_kspace):
    """The figure's zero-filled volume comes from the reconstruction's own pass: the stage
    bundle's undersampling of every slice, in the file's units, on the reconstruction's grid,
    with the mask that gives the fraction of k-space sampled."""
    from mribundles.chains.pipeline import _sampled_fraction
    from mribundles.io.kspace import load_kspace
    from mribundles.physics.coils import rss
    from mribundles.physics.fft import ifft2c
    from mribundles.physics.masks import make_mask

    recon = ReconStage(RECON, torch.device("cpu"), mask="random1d", acceleration=4, center_fraction=0.08, seed=0)
    seen = recon.volumes(multislice_kspace, keys=("pred", "zero_filled", "mask"))
    affine = np.asarray(__import__("h5py").File(multislice_kspace)["/"].attrs["affine"])
    for key in ("pred", "zero_filled", "mask"):  # the chain's grid
        assert seen[key].shape == (1, 99, 117, 12) and np.allclose(seen[key].affine.numpy(), affine)
    assert torch.equal(seen["pred"], recon(multislice_kspace))  # the same reconstruction as a plain call
    volume = seen["zero_filled"][0].numpy()
    kspace = load_kspace(multislice_kspace, slice_index=5)  # (coil, ky, kx)
    mask = make_mask("random1d", kspace.shape[-2:], 4.0, 0.08, 0)
    expected = rss(ifft2c(kspace * mask)).numpy()  # (ky, kx)
    assert np.allclose(volume[:, :, 5], expected.T, rtol=1e-5, atol=1e-6)
    assert torch.equal(seen["mask"][0, :, :, 5], mask.T.to(seen["mask"].dtype))
    sampled = _sampled_fraction(seen["mask"])
    assert sampled == pytest.approx(float(mask.float().mean()))
    assert 0.2 < sampled < 0.3  # 4x
    # A bundle whose items hold no zero-filled image gives the keys it has.
    assert set(recon.volumes(multislice_kspace, keys=("pred", "no_such_key"))) == {"pred"}


def test_stages_hand_over_in_memory_on_the_device(multislice_kspace, tmp_path, monkeypatch):
    """The reconstruction's network output, the assembled volume and the whole segmentation
    stage run with host copies and file writes made to fail; the volume handed over is a
    MetaTensor on the chain's device."""
    handed_over = []

    original_seg_call = SegStage.__call__

    def guarded_seg(self, volume):
        handed_over.append((type(volume), volume.device, volume.shape))
        with no_host_copies_or_files():
            return original_seg_call(self, volume)

    original_recon_call = ReconStage.volumes

    def guarded_recon(self, kspace_file, *args, **kwargs):
        forward = self.network.forward

        def guarded_forward(*args, **kwargs):  # from the network's input on: no host copies
            with no_host_copies_or_files():
                return forward(*args, **kwargs)

        monkeypatch.setattr(self.network, "forward", guarded_forward)
        return original_recon_call(self, kspace_file, *args, **kwargs)

    monkeypatch.setattr(SegStage, "__call__", guarded_seg)
    monkeypatch.setattr(ReconStage, "volumes", guarded_recon)
    wf = _chain_workflow(multislice_kspace, tmp_path)
    wf.run()
    wf.finalize()
    assert handed_over == [(MetaTensor, torch.device("cpu"), (1, 99, 117, 12))]
    assert (tmp_path / "mni_slab_seg.nii.gz").is_file()


def test_tracked_chain_logs_one_nested_run_per_stage(multislice_kspace, tmp_path):
    out = tmp_path / "tracked"
    wf = _chain_workflow(multislice_kspace, out, tracking="mlflow")
    wf.run()
    wf.finalize()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{out}/mlruns.db")
    runs = client.search_runs([client.get_experiment_by_name("brain_mri_recon_seg").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    stages = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(stages) == {"reconstruction", "segmentation"}
    assert parent.data.params["recon_bundle"] == RECON and parent.data.params["seg_bundle"] == "brain_mri_tissue_seg"
    recon, seg = stages["reconstruction"], stages["segmentation"]
    assert recon.data.params["bundle_name"] == RECON and recon.data.params["kspace_file"] == str(multislice_kspace)
    seg_weights = REPO / "bundles" / "brain_mri_tissue_seg" / "models" / "model.pt"
    assert seg.data.params["weights_sha256"] == __import__("mribundles").bundles.file_sha256(seg_weights)
    assert {a.path for a in client.list_artifacts(recon.info.run_id)} == {"mni_slab_recon.nii.gz"}
    assert {a.path for a in client.list_artifacts(seg.info.run_id)} == {"mni_slab_seg.nii.gz", "mni_slab_overview.png"}
    labels = np.asarray(nib.load(out / "mni_slab_seg.nii.gz").dataobj)
    for index, name in enumerate(("CSF", "grey_matter", "white_matter"), start=1):
        assert seg.data.metrics[f"voxels_{name}"] == float((labels == index).sum())
    assert recon.data.metrics["seconds"] > 0 and seg.data.metrics["seconds"] > 0
    assert any(a.path.startswith("config_") for a in client.list_artifacts(parent.info.run_id))


def test_stage_bundles_that_do_not_fit_are_refused_before_any_work(tmp_path):
    seg = tmp_path / "brain_mri_tissue_seg"
    shutil.copytree(REPO / "bundles" / "brain_mri_tissue_seg", seg, ignore=shutil.ignore_patterns("outputs", "eval"))
    meta = json.loads((seg / "configs" / "metadata.json").read_text())
    meta["network_data_format"]["inputs"]["image"]["num_channels"] = 2
    (seg / "configs" / "metadata.json").write_text(json.dumps(meta))
    recon = ReconStage(RECON, torch.device("cpu"))
    versions = f"brain_mri_recon_unet 0.1.1 -> brain_mri_tissue_seg {meta['version']}"
    with pytest.raises(InvalidInputError, match=re.escape(f"stage bundles do not fit ({versions}): channels: reconstruction gives 1, segmentation takes 2")):
        PipelineChain(recon, seg=SegStage(seg, torch.device("cpu")), output_dir=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_chain_refusal_is_one_line_from_the_command_line(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an hdf5 file")
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(BUNDLE / "configs" / "inference.json"),
           "--kspace_file", str(bad), "--recon_bundle", RECON, "--output_dir", str(tmp_path / "out")]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {bad}: ") and "\n" not in last
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_acceleration_budget_reports_dice_psnr_and_ssim_per_acceleration(multislice_kspace, tmp_path, capsys):
    from mribundles.cli import main

    out = tmp_path / "budget"
    code = main(["acceleration-budget", "--chain", str(BUNDLE), "--kspace", str(multislice_kspace),
                 "--accelerations", "2", "8", "--recon-bundle", RECON, "--out", str(out), "--track",
                 "--labels", sample_path("mni152_2009a_tissue.nii.gz")])
    assert code == 0
    table = capsys.readouterr().out
    assert "| R | PSNR | SSIM | Dice CSF | Dice grey matter | Dice white matter | mean Dice |" in table
    assert "Dice against the true labels" in table and "| fully sampled | " in table
    result = json.loads((out / "budget.json").read_text())
    assert [row["acceleration"] for row in result["rows"]] == [2.0, 8.0]
    low, high = result["rows"]
    assert low["psnr"] > high["psnr"] + 3  # more undersampling, worse image
    for row in result["rows"]:
        assert 0 < row["ssim"] <= 1 and all(0 <= d <= 1 for d in row["dice"].values())
    assert low["dice"]["white matter"] > 0.5  # 2x barely changes the analysis
    # Against the template's true tissue labels: the fully sampled volume segments well, 8x worse.
    truth = result["reference_dice_truth"]
    assert truth["white matter"] > 0.7 and truth["grey matter"] > 0.5
    assert high["dice_truth"]["white matter"] < truth["white matter"]
    assert (out / "budget.png").stat().st_size > 10_000

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{out}/mlruns.db")
    runs = client.search_runs([client.get_experiment_by_name("mribundles").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == {"R=2", "R=8"} and parent.data.params["recon_bundle.bundle_name"] == RECON
    assert children["R=8"].data.metrics["psnr"] == pytest.approx(high["psnr"])
    assert children["R=2"].data.metrics["dice_white_matter"] == pytest.approx(low["dice"]["white matter"])
    assert children["R=8"].data.metrics["dice_truth_grey_matter"] == pytest.approx(high["dice_truth"]["grey matter"])


@pytest.fixture(scope="module")
def tiny_slab(tmp_path_factory) -> Path:
    """4 axial planes of the real MNI T1 every 4 mm (49x58), 4-coil k-space, no stated
    geometry: an acceleration budget on it takes seconds."""
    volume = np.asarray(nib.load(sample_path("mni152_2009a_t1.nii.gz")).dataobj, np.float32)[::4, ::4] / 255.0
    kspace = torch.stack([simulate_multicoil_kspace(torch.from_numpy(volume[:, :, z].T.copy()), 4, seed=int(z))[0]
                          for z in (60, 65, 70, 75)])
    path = tmp_path_factory.mktemp("budget") / "tiny_slab.h5"
    write_fastmri(path, kspace)
    return path


def test_acceleration_budget_quiet_hides_its_progress_bars(tiny_slab, tmp_path, capsys, monkeypatch):
    """On a terminal the accelerations' bar and the reconstruction stage's are drawn on stderr;
    --quiet hides both and keeps the table and the closing summary."""
    import io

    from mribundles.cli import main

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for quiet in (False, True):
        terminal = Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        out = tmp_path / f"quiet_{quiet}"
        code = main(["acceleration-budget", "--chain", str(BUNDLE), "--kspace", str(tiny_slab), "--accelerations", "2",
                     "--recon-bundle", RECON, "--out", str(out), *(["--quiet"] if quiet else [])])
        assert code == 0
        drawn, table = terminal.getvalue(), capsys.readouterr().out
        assert "| R | PSNR | SSIM |" in table and table.count("\n| 2 | ") == 1
        assert "\ndone in " in drawn and f"  {out / 'budget.png'}" in drawn  # the summary either way
        bars = ["acceleration budget: 100%|", "1/1 [", "acceleration/s", "reconstruction: 100%|"]
        assert [bar in drawn for bar in bars] == [not quiet] * len(bars), drawn


def test_acceleration_budget_refuses_undersampled_input(tmp_path, capsys):
    from mribundles.cli import main

    path = tmp_path / "undersampled.h5"
    kspace = torch.zeros(2, 4, 32, 32, dtype=torch.complex64)
    kspace[..., ::4] = 1
    write_fastmri(path, kspace)
    code = main(["acceleration-budget", "--chain", str(BUNDLE), "--kspace", str(path), "--accelerations", "2",
                 "--recon-bundle", RECON, "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: only 25.0% of k-space is sampled") and "needs fully sampled k-space" in err


def test_batch_size_for_device_memory():
    from mribundles.chains import batch_size_for

    gib = 2**30
    assert batch_size_for(free_bytes=40 * gib, bytes_per_slice=1 * gib) == 20  # half of the free memory
    assert batch_size_for(free_bytes=1 * gib, bytes_per_slice=3 * gib) == 1  # never below one slice
    assert batch_size_for(free_bytes=1000 * gib, bytes_per_slice=gib // 100) == 64  # capped


def test_many_studies_are_sharded_across_processes(multislice_kspace, tmp_path):
    """torchrun with two CPU processes and three studies: every study is processed once."""
    import os

    studies = []
    for name in ("a", "b", "c"):
        studies.append(tmp_path / f"study_{name}.h5")
        shutil.copy(multislice_kspace, studies[-1])
    configs = f"['{BUNDLE / 'configs' / 'inference.json'}','{BUNDLE / 'configs' / 'multi_gpu_inference.json'}']"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "monai.bundle", "run", "--config_file", configs, "--kspace_file", json.dumps([str(s) for s in studies]),
           "--recon_bundle", RECON, "--output_dir", str(tmp_path / "out")]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert log.count("Engine run finished") == 2  # both ranks had studies: 2 + 1
    assert sorted(p.name for p in (tmp_path / "out").glob("*_seg.nii.gz")) == [f"study_{n}_seg.nii.gz" for n in "abc"]
