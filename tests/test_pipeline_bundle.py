"""The full pipeline: reconstruction -> super-resolution -> segmentation -> registration to the
MNI template, stages by reference and switchable, one device, nested lineage."""

from __future__ import annotations

import json
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
from mribundles.chains import PipelineChain, ReconStage, RegStage, SegStage, SuperResStage
from mribundles.errors import InvalidInputError
from mribundles.io import write_fastmri
from mribundles.physics import lowres_affine, thick_slices
from mribundles.physics.simulate import simulate_multicoil_kspace
from mribundles.sample_data import path as sample_path

BUNDLE = REPO / "bundles" / "brain_mri_pipeline"
RECON = "brain_mri_recon_unet"  # the faster reconstruction bundle keeps these tests quick
MNI = sample_path("mni152_2009a_t1.nii.gz")


@pytest.fixture(scope="module")
def thick_slab(tmp_path_factory) -> Path:
    """16 axial slices 4 mm thick through the middle of the real voxelmorph subject (RAS, 1 mm
    in-plane, cropped to 112x144), 4-coil k-space, with the affine that thick slices imply."""
    subject = nib.as_closest_canonical(nib.load(sample_path("voxelmorph_t1.nii.gz")))
    volume = torch.from_numpy(np.asarray(subject.dataobj, np.float32) / 255.0)[24:136, 40:184, 64:128]
    slabs = thick_slices(volume, 4, axis=2).numpy()
    kspace = torch.stack([simulate_multicoil_kspace(torch.from_numpy(slabs[:, :, z].T.copy()), 4, seed=z)[0] for z in range(16)])
    affine = subject.affine.copy()
    affine[:3, 3] = (subject.affine @ [24, 40, 64, 1])[:3]
    path = tmp_path_factory.mktemp("pipeline") / "subject_slab.h5"
    write_fastmri(path, kspace, attrs={"affine": lowres_affine(affine, (1, 1, 4)), "kspace_origin": "simulated from the real voxelmorph T1"})
    return path


def _pipeline(kspace: Path, out: Path, **override):
    return workflow(BUNDLE, ["inference.json"], "infer", kspace_file=str(kspace), output_dir=str(out),
                    recon_bundle=RECON, device="cpu", **override)


def test_metadata_valid_against_shipped_schema():
    check_metadata(BUNDLE)


def test_overview_panels_follow_the_stages_that_ran():
    """Recon -> seg: zero-filled, reconstructed, labels over the reconstruction. With
    super-resolution and registration: the labels go over the super-resolved volume."""
    from mribundles.handlers.pipeline_overview import overview_panels

    grid = {key: (np.full((4, 4, 4), float(i)), np.diag([1.0, 1.0, 4.0 if key in ("zero_filled", "recon") else 1.0, 1.0]))
            for i, key in enumerate(("zero_filled", "recon", "sr", "seg", "registered", "template"))}
    recon_seg = overview_panels({k: grid[k] for k in ("recon", "seg", "zero_filled")}, sampled=0.25)
    assert [p[0] for p in recon_seg] == ["zero-filled, 25% sampled", "reconstructed", "tissue labels"]
    _, image, affine, labels = recon_seg[2]
    assert image is grid["recon"][0] and affine is grid["recon"][1] and labels is grid["seg"][0]
    assert all(p[3] is None for p in recon_seg[:2])
    full = overview_panels(grid)
    assert [p[0] for p in full] == ["zero-filled", "reconstructed", "super-resolved", "tissue labels",
                                    "registered to the template", "template"]
    assert full[3][1] is grid["sr"][0] and full[3][2] is grid["sr"][1]
    assert [p[0] for p in overview_panels({"recon": grid["recon"]})] == ["reconstructed"]
    with pytest.raises(ValueError, match="labels need the image"):
        overview_panels({"seg": grid["seg"]})
    with pytest.raises(ValueError, match=r"no overview panel for \['kspace'\]"):
        overview_panels({"recon": grid["recon"], "kspace": grid["recon"]})


def test_overview_turns_each_volume_to_ras_before_cutting_it():
    """A volume stored (y, x, z) with x flipped (as a k-space file's axes may come) is drawn as
    the same volume stored in RAS: same arrays, same spacing."""
    from mribundles.handlers.pipeline_overview import _near_ras

    ras = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4)
    ras_affine = np.diag([1.0, 2.0, 4.0, 1.0])
    stored = ras[::-1].transpose(1, 0, 2)  # axes (y, -x, z)
    stored_affine = np.array([[0, -1.0, 0, 1.0], [2.0, 0, 0, 0], [0, 0, 4.0, 0], [0, 0, 0, 1]])
    assert np.allclose(stored_affine @ [2, 1, 3, 1], ras_affine @ [0, 2, 3, 1])  # same point
    volume, affine, labels = _near_ras(stored, stored_affine, stored.astype(np.uint8))
    assert np.array_equal(volume, ras) and np.array_equal(labels, ras.astype(np.uint8))
    assert np.allclose(affine, ras_affine)
    same, same_affine, none = _near_ras(ras, ras_affine, None)
    assert np.array_equal(same, ras) and np.allclose(same_affine, ras_affine) and none is None


def test_demo_writes_every_stage_and_tracks_one_nested_run_each(tmp_path):
    """The documented command: 4 mm slices of the real subject -> 1 mm volume -> labels ->
    registered to the template, every output on its grid, and one MLflow run per stage."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(BUNDLE / "configs" / "inference.json"),
           "--output_dir", str(tmp_path), "--tracking", "mlflow"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    stem = "voxelmorph_t1_thick_slices_kspace"
    subject = nib.as_closest_canonical(nib.load(sample_path("voxelmorph_t1.nii.gz")))
    recon, sr, seg = (nib.load(tmp_path / f"{stem}_{k}.nii.gz") for k in ("recon", "sr", "seg"))
    assert recon.shape == (160, 224, 48) and np.allclose(recon.affine, lowres_affine(subject.affine, (1, 1, 4)))
    assert sr.shape == seg.shape == subject.shape and np.allclose(sr.affine, subject.affine) and np.allclose(seg.affine, subject.affine)
    assert set(np.unique(np.asarray(seg.dataobj))) == {0, 1, 2, 3}
    mni = nib.load(MNI)
    for name in ("warped", "warped_labels"):
        image = nib.load(tmp_path / f"{stem}_to_mni152_2009a_t1_{name}.nii.gz")
        assert image.shape == mni.shape and np.allclose(image.affine, mni.affine)
    report = json.loads((tmp_path / f"{stem}_to_mni152_2009a_t1_registration.json").read_text())
    # the pipeline's own labels, warped, against the template's: the registration bundle alone
    # reaches GM 0.709 / WM 0.726 from the 1 mm scan and its FreeSurfer-derived labels
    assert report["dice_grey_matter"] > 0.6 and report["dice_white_matter"] > 0.6, report
    assert report["folding_percent"] < 0.1, report
    assert (tmp_path / f"{stem}_overview.png").stat().st_size > 100_000
    # every stage ran: zero-filled, reconstructed, super-resolved, labels, registered, template
    # (3.3 inches each at 80 dpi)
    assert __import__("matplotlib.image").image.imread(tmp_path / f"{stem}_overview.png").shape[:2] == (560, 1584)
    assert not list(tmp_path.glob(".*")), "a temporary file was left behind"

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns.db")
    runs = client.search_runs([client.get_experiment_by_name("brain_mri_pipeline").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    stages = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(stages) == {"reconstruction", "super-resolution", "segmentation", "registration"}
    assert stages["super-resolution"].data.params["bundle_name"] == "brain_mri_sr"
    assert stages["registration"].data.metrics["dice_grey_matter"] == pytest.approx(report["dice_grey_matter"])
    assert {a.path for a in client.list_artifacts(stages["super-resolution"].info.run_id)} == {f"{stem}_sr.nii.gz"}


def test_stages_hand_over_in_memory_on_the_device(thick_slab, tmp_path, monkeypatch):
    """Super-resolution and segmentation run whole, and the registration network runs, with host
    copies and file writes made to fail; every stage receives a MetaTensor on the chain's device."""
    handed_over = []

    def guarded(stage_call, name):
        def call(self, volume, *labels):
            handed_over.append((name, type(volume), volume.device, tuple(volume.shape)))
            with no_host_copies_or_files():
                return stage_call(self, volume, *labels)
        return call

    monkeypatch.setattr(SuperResStage, "__call__", guarded(SuperResStage.__call__, "sr"))
    monkeypatch.setattr(SegStage, "__call__", guarded(SegStage.__call__, "seg"))
    original_reg = RegStage.__call__

    def reg_call(self, volume, labels=None):
        handed_over.append(("reg", type(volume), volume.device, tuple(volume.shape)))
        assert isinstance(labels, MetaTensor) and labels.device == volume.device
        forward = self.network.forward

        def guarded_forward(*args, **kwargs):
            with no_host_copies_or_files():
                return forward(*args, **kwargs)

        monkeypatch.setattr(self.network, "forward", guarded_forward)
        return original_reg(self, volume, labels)

    monkeypatch.setattr(RegStage, "__call__", reg_call)
    wf = _pipeline(thick_slab, tmp_path)
    wf.run()
    wf.finalize()
    cpu = torch.device("cpu")
    assert handed_over == [("sr", MetaTensor, cpu, (1, 112, 144, 16)), ("seg", MetaTensor, cpu, (1, 112, 144, 64)),
                           ("reg", MetaTensor, cpu, (1, 112, 144, 64))]
    assert nib.load(tmp_path / "subject_slab_sr.nii.gz").shape == (112, 144, 64)


def test_stages_switch_off_by_config(thick_slab, tmp_path):
    """Super-resolution and registration switched off: the labels lie on the 4 mm acquisition grid."""
    wf = _pipeline(thick_slab, tmp_path, sr_bundle="none", reg_bundle="null")  # as a command line gives them
    wf.run()
    wf.finalize()
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["subject_slab_overview.png", "subject_slab_recon.nii.gz", "subject_slab_seg.nii.gz"]
    # zero-filled, reconstructed, labels: three columns
    assert __import__("matplotlib.image").image.imread(tmp_path / "subject_slab_overview.png").shape[:2] == (560, 792)
    recon, seg = (nib.load(tmp_path / f"subject_slab_{k}.nii.gz") for k in ("recon", "seg"))
    assert recon.shape == seg.shape == (112, 144, 16) and np.allclose(seg.affine, recon.affine)
    assert np.linalg.norm(seg.affine[:3, 2]) == pytest.approx(4.0)
    assert {1, 2, 3} <= set(np.unique(np.asarray(seg.dataobj)))


def test_a_stage_bundle_that_does_not_fit_is_refused_before_any_work(tmp_path):
    """A super-resolution bundle whose metadata declares a 2D input: refused with both names."""
    import shutil

    sr = tmp_path / "bundles" / "brain_mri_sr"
    shutil.copytree(REPO / "bundles" / "brain_mri_sr", sr, ignore=shutil.ignore_patterns("outputs", "eval", "docs"))
    meta = json.loads((sr / "configs" / "metadata.json").read_text())
    meta["network_data_format"]["inputs"]["image"]["spatial_shape"] = ["*", "*"]
    (sr / "configs" / "metadata.json").write_text(json.dumps(meta))
    cpu = torch.device("cpu")
    out = tmp_path / "out"
    with pytest.raises(InvalidInputError, match=r"stage bundles do not fit \(brain_mri_recon_unet 0.1.1 -> brain_mri_sr 0.2.0\): super-resolution is not a 3D bundle$"):
        PipelineChain(ReconStage(RECON, cpu), SuperResStage(sr, cpu), None, None, str(out))
    assert not out.exists()
