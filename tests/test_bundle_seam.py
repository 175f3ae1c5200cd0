"""The seam between bundles and stages: `open_bundle`, the stage contract, one volume geometry.

The geometry test reconstructs one k-space file both ways, with a reconstruction bundle run on
its own and with a chain's reconstruction stage, and compares the NIfTI files they write.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from bundle_checks import REPO, workflow
from mribundles.bundles import open_bundle, open_recon_bundle
from mribundles.errors import InvalidInputError
from mribundles.io import minimal_ismrmrd_header, write_fastmri
from mribundles.io.geometry import assemble_volume, header_spacing, kspace_affine
from mribundles.physics.simulate import simulate_multicoil_kspace
from mribundles.sample_data import path as sample_path
from mribundles.transforms import NormalizeKspaced, ZeroFilld
from mribundles.transforms.kspace import RestoreScaled, restore_scale

RECON = "brain_mri_recon_unet"  # the fastest reconstruction bundle
# An oblique slab: 2 mm columns, 2 mm rows, 5 mm between slices, rotated about z and shifted.
ANGLE = np.deg2rad(20)
AFFINE = np.array([[2 * np.cos(ANGLE), -2 * np.sin(ANGLE), 0, -40.0],
                   [2 * np.sin(ANGLE), 2 * np.cos(ANGLE), 0, -60.0],
                   [0, 0, 5.0, 12.5],
                   [0, 0, 0, 1]])


def _mni_planes(count: int = 3) -> torch.Tensor:
    """(count, 4, 64, 48) complex k-space of axial planes of the real MNI152 T1 (2 mm in-plane)."""
    volume = np.asarray(nib.load(sample_path("mni152_2009a_t1.nii.gz")).dataobj, np.float32)[::2, ::2] / 255.0
    planes = [volume[10:58, 10:74, z].T.copy() for z in range(40, 40 + 5 * count, 5)]  # (ky=64, kx=48)
    return torch.stack([simulate_multicoil_kspace(torch.from_numpy(p), 4, seed=i)[0] for i, p in enumerate(planes)])


@pytest.fixture(scope="module")
def slab(tmp_path_factory):
    path = tmp_path_factory.mktemp("seam") / "slab.h5"
    write_fastmri(path, _mni_planes(), attrs={"affine": AFFINE})
    return path


# --- open_bundle -----------------------------------------------------------------------------


def test_open_bundle_refuses_an_override_the_config_does_not_define():
    with pytest.raises(InvalidInputError) as info:
        open_bundle(RECON, overrides={"acceleraton": 8})
    message = str(info.value)
    assert "\n" not in message and RECON in message and "'acceleraton'" in message
    assert message.startswith(str(REPO / "bundles" / RECON / "configs" / "inference.json"))
    with pytest.raises(InvalidInputError, match="'network_def#no_such_size'"):
        open_bundle(RECON, overrides={"network_def#no_such_size": 3})  # nested ids are checked too
    with pytest.raises(InvalidInputError, match="no configs/nothing.json"):
        open_bundle(RECON, config="nothing")


def test_open_bundle_sets_defined_overrides_and_loads_the_weights_once(monkeypatch):
    import mribundles.bundles as bundles

    loads = []
    original = bundles._load_weights
    monkeypatch.setattr(bundles, "_load_weights", lambda *args: loads.append(args) or original(*args))
    bundle = open_bundle(REPO / "bundles" / RECON, overrides={"acceleration": 8, "network_def#chans": 16, "device": "cpu"})
    assert bundle.name == RECON and bundle.get("acceleration") == 8 and bundle.device == torch.device("cpu")
    network = bundle.network()
    assert network is bundle.network() and not network.training and len(loads) == 1
    run = bundle.with_settings({"acceleration": 4})  # per-run settings share the loaded network
    assert run.get("acceleration") == 4 and run.network() is network and len(loads) == 1
    assert [type(t).__name__ for t in bundle.loaders().transforms] == ["LoadKspaced"]
    assert "LoadKspaced" not in [type(t).__name__ for t in bundle.preprocessing().transforms]
    assert [type(t).__name__ for t in bundle.postprocessing().transforms] == ["RestoreScaled"]


def test_a_cartesian_only_bundle_is_refused_for_radial_data():
    with pytest.raises(InvalidInputError, match=f"bundle {RECON} has no 'sampling' switch"):
        open_recon_bundle(RECON, "radial")
    assert open_recon_bundle("brain_mri_recon_reconresnet", "cartesian").get("sampling") == "cartesian"


# --- the intensity scale: NormalizeKspaced in preprocessing, RestoreScaled in postprocessing ----


def test_restore_scale_undoes_the_kspace_normalisation():
    kspace = _mni_planes(1)[0] * 1e-4  # raw scanner scales are far from 1
    item = NormalizeKspaced("kspace")(ZeroFilld("kspace")({"kspace": kspace}))
    assert float(item["zero_filled"].max()) == pytest.approx(1.0)
    restored = RestoreScaled(["pred", "zero_filled"])({**item, "pred": item["zero_filled"].clone()})
    expected = ZeroFilld("kspace")({"kspace": kspace})["zero_filled"]
    torch.testing.assert_close(restored["zero_filled"], expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(restored["pred"], restored["zero_filled"], rtol=0, atol=0)
    # a batch: one scale per item, broadcast over the item's own dimensions
    images, scales = torch.ones(3, 1, 4, 5), torch.tensor([1.0, 2.0, 4.0])
    assert restore_scale(images, scales).flatten(1).amax(1).tolist() == [1.0, 2.0, 4.0]


# --- geometry --------------------------------------------------------------------------------


def test_kspace_affine_from_the_file_else_its_header_else_the_voxel_size(slab, tmp_path):
    assert np.allclose(kspace_affine(slab, (9.0, 9.0, 9.0)).numpy(), AFFINE)
    kspace = _mni_planes(2)
    # fastMRI's layout: ISMRMRD's x (the readout) along the rows (64), y along the columns (48)
    fastmri = tmp_path / "fastmri.h5"
    write_fastmri(fastmri, kspace, ismrmrd_header=minimal_ismrmrd_header((64, 48), (192.0, 96.0, 3.0)))
    assert header_spacing(fastmri) == (2.0, 3.0, 3.0)  # (column, row, slice) mm
    assert np.allclose(kspace_affine(fastmri, (9.0, 9.0, 9.0)).numpy(), np.diag([2.0, 3.0, 3.0, 1.0]))
    # this library's minimal header: x along the columns (48), y along the rows (64)
    ours = tmp_path / "ours.h5"
    write_fastmri(ours, kspace, ismrmrd_header=minimal_ismrmrd_header((48, 64), (96.0, 192.0)))
    assert header_spacing(ours) == (2.0, 3.0, 1.0)
    # a header of another matrix (a cropped reconstruction) says nothing about this k-space
    other = tmp_path / "other.h5"
    write_fastmri(other, kspace, ismrmrd_header=minimal_ismrmrd_header((32, 32), (96.0, 96.0)))
    assert header_spacing(other) is None
    plain = tmp_path / "plain.npy"
    np.save(plain, kspace.numpy())
    assert np.allclose(kspace_affine(plain, (1.5, 1.5, 4.0)).numpy(), np.diag([1.5, 1.5, 4.0, 1.0]))


def test_assemble_volume_takes_every_slice_of_its_file(slab):
    volume = assemble_volume(torch.arange(3 * 64 * 48, dtype=torch.float32).reshape(3, 64, 48), slab)
    assert tuple(volume.shape) == (1, 48, 64, 3) and np.allclose(volume.affine.numpy(), AFFINE)
    assert float(volume[0, 5, 7, 2]) == 2 * 64 * 48 + 7 * 48 + 5  # (kx, ky, slice) of slice[2][7][5]
    assert volume.meta["filename_or_obj"] == str(slab)
    with pytest.raises(InvalidInputError, match="2 reconstructed slices for a file of 3"):
        assemble_volume(torch.zeros(2, 64, 48), slab)


def test_a_bundle_and_a_chain_write_the_same_volume_on_the_same_grid(slab, tmp_path):
    from mribundles.chains import PipelineChain, ReconStage

    sampling = {"mask": "random1d", "acceleration": 4, "center_fraction": 0.08, "seed": 0}
    bundle_out, chain_out = tmp_path / "bundle", tmp_path / "chain"
    wf = workflow(REPO / "bundles" / RECON, ["inference.json"], "infer", kspace_file=str(slab), output_dir=str(bundle_out),
                  device="cpu", quiet=True, **sampling)
    wf.run()
    wf.finalize()
    PipelineChain(ReconStage(RECON, torch.device("cpu"), **sampling), output_dir=str(chain_out)).process(None, {"kspace": str(slab)})

    alone, chained = nib.load(bundle_out / "slab_recon.nii.gz"), nib.load(chain_out / "slab_recon.nii.gz")
    assert alone.shape == chained.shape == (48, 64, 3)
    assert np.allclose(alone.affine, AFFINE) and np.allclose(chained.affine, AFFINE)
    assert np.array_equal(alone.header.get_zooms(), chained.header.get_zooms())
    a, c = np.asarray(alone.dataobj), np.asarray(chained.dataobj)
    assert a.dtype == c.dtype == np.float32 and a.max() > 0
    # batches of 1 (the bundle) and of 4 (the chain) round differently in the last bits only
    np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6 * float(a.max()))


def test_the_recon_stage_takes_its_sampling_per_call_and_loads_once(slab, monkeypatch):
    import mribundles.bundles as bundles
    from mribundles.chains import ReconStage

    loads = []
    original = bundles._load_weights
    monkeypatch.setattr(bundles, "_load_weights", lambda *args: loads.append(args) or original(*args))
    stage = ReconStage(RECON, torch.device("cpu"))
    low, high = stage(slab, acceleration=2, center_fraction=0.16), stage(slab, acceleration=8, center_fraction=0.04)
    assert len(loads) == 1 and not torch.equal(low, high)
    again = stage(slab, acceleration=2, center_fraction=0.16)
    torch.testing.assert_close(again, low, rtol=0, atol=0)
    assert stage.lineage(slab, acceleration=8)["acceleration"] == 8 and stage.lineage(slab)["acceleration"] == 4
