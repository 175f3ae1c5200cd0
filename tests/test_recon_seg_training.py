"""Joint fine-tuning (`brain_mri_recon_seg/configs/train.json`): the segmentation loss trains the
reconstruction network through the frozen segmenter, and the result loads into the chain."""

from __future__ import annotations

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch

from bundle_checks import REPO, run_multi_gpu_train, workflow
from mribundles.chains import ReconStage
from mribundles.errors import InvalidInputError
from mribundles.io import write_fastmri
from mribundles.io.images import write_image
from mribundles.physics.simulate import simulate_multicoil_kspace
from mribundles.sample_data import path as sample_path

BUNDLE = REPO / "bundles" / "brain_mri_recon_seg"
RECON = "brain_mri_recon_unet"  # the faster reconstruction bundle keeps the test quick


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """12 consecutive 1 mm axial planes of the real MNI T1 (2 mm in-plane) as 4-coil k-space,
    and the template's tissue labels on the same planes and affine."""
    template = nib.load(sample_path("mni152_2009a_t1.nii.gz"))
    tissue = np.asarray(nib.load(sample_path("mni152_2009a_tissue.nii.gz")).dataobj, np.uint8)
    volume = np.asarray(template.dataobj, np.float32)[::2, ::2] / 255.0
    planes = np.arange(60, 72)
    kspace = torch.stack([simulate_multicoil_kspace(torch.from_numpy(volume[:, :, z].T.copy()), 4, seed=int(z))[0] for z in planes])
    affine = template.affine @ np.array([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 1.0, 60.0], [0, 0, 0, 1]])
    root = tmp_path_factory.mktemp("recon_seg_brain")
    write_fastmri(root / "train" / "mni_kspace.h5", kspace, attrs={"affine": affine, "kspace_origin": "simulated from the real MNI152 T1"})
    write_image(root / "train" / "mni_label.nii.gz", tissue[::2, ::2, planes], affine)
    return root


def _train(dataset, tmp_path, **override):
    override = {"recon_bundle": RECON, **override}
    return workflow(BUNDLE, ["train.json"], "train", dataset_dir=str(dataset),
                    kspace_file=str(dataset / "train" / "mni_kspace.h5"), label_file=str(dataset / "train" / "mni_label.nii.gz"),
                    output_dir=str(tmp_path / "eval"), ckpt_dir=str(tmp_path / "models"), device="$torch.device('cpu')",
                    slab_slices=4, slab_step=2, max_epochs=1, iterations_per_epoch=2, **override)


def test_segmentation_loss_alone_trains_the_reconstruction_through_the_frozen_segmenter(dataset, tmp_path):
    train = _train(dataset, tmp_path, recon_weight=0.0)  # no reconstruction loss: every update comes through the segmenter
    assert train.check_properties() == []
    network = train.parser.get_parsed_content("network_def")
    recon_before = {k: v.clone() for k, v in network.recon_network.state_dict().items()}
    seg_before = {k: v.clone() for k, v in network.seg_network.state_dict().items()}
    train.run()
    trainer = train.parser.get_parsed_content("train#trainer")
    assert trainer.state.iteration == 2 and np.isfinite(float(trainer.state.output["loss"]))
    recon_after, seg_after = network.recon_network.state_dict(), network.seg_network.state_dict()
    assert any(not torch.equal(recon_before[k], recon_after[k]) for k in recon_before), "no reconstruction weight changed"
    assert all(torch.equal(seg_before[k], seg_after[k]) for k in seg_before), "the segmenter must stay frozen"
    assert not network.seg_network.training
    assert list((tmp_path / "eval" / "checkpoints").glob("checkpoint_epoch=1.pt"))
    train.finalize()

    # The saved weights are the reconstruction network's alone, and the chain runs with them.
    weights = tmp_path / "models" / "recon_finetuned.pt"
    state = torch.load(weights, map_location="cpu", weights_only=True)
    assert state.keys() == recon_after.keys() and all(torch.equal(state[k], recon_after[k]) for k in state)
    stage = ReconStage(RECON, torch.device("cpu"), weights=str(weights))
    assert all(torch.equal(v, state[k]) for k, v in stage.network.state_dict().items())
    assert stage.lineage("x.h5")["weights_sha256"] != ReconStage(RECON, torch.device("cpu")).lineage("x.h5")["weights_sha256"]


def test_slabs_take_planes_step_apart_with_their_affine(dataset, tmp_path):
    train = _train(dataset, tmp_path)
    slabs = train.parser.get_parsed_content("train#dataset")
    assert len(slabs) == 12 - 7 + 1  # a slab of 4 planes 2 apart spans 7 of the 12
    slab = slabs[3]
    assert slab["kspace"].shape[:2] == (4, 4) and slab["target"].shape[0] == 4 and slab["scale"].shape == (4,)
    # slab plane k is file plane 3 + 2k: 2 mm apart along z, starting 3 mm above the file's first plane
    with h5py.File(dataset / "train" / "mni_kspace.h5", "r") as hf:
        file_affine = torch.from_numpy(np.asarray(hf.attrs["affine"]))
    assert torch.allclose(slab["affine"][:, 2].double(), 2 * file_affine[:, 2])
    assert torch.allclose(slab["affine"][:3, 3].double(), file_affine[:3, 3] + 3 * file_affine[:3, 2])


def test_labels_on_another_grid_are_refused_naming_the_file(dataset, tmp_path):
    from mribundles.chains.joint import KspaceSlabs

    label = dataset / "train" / "mni_label.nii.gz"
    wrong = tmp_path / "too_few_planes.nii.gz"
    image = nib.load(label)
    write_image(wrong, np.asarray(image.dataobj)[..., :10], image.affine)
    with pytest.raises(InvalidInputError, match="one plane per k-space plane") as error:
        KspaceSlabs(dataset / "train" / "mni_kspace.h5", wrong, slice_transform=None)
    assert str(wrong) in str(error.value)


def test_multi_gpu_overlay_fine_tunes_with_two_processes(dataset, tmp_path):
    """torchrun, two CPU processes (gloo): each rank draws its own slabs, rank 0 alone logs and
    saves, and the saved weights load into the reconstruction bundle's network."""
    log = run_multi_gpu_train(BUNDLE, tmp_path, "--recon_bundle", RECON, "--dataset_dir", str(dataset),
                              "--kspace_file", str(dataset / "train" / "mni_kspace.h5"),
                              "--label_file", str(dataset / "train" / "mni_label.nii.gz"),
                              "--slab_slices", "4", "--max_epochs", "1", "--iterations_per_epoch", "4")
    assert log.count("SupervisedTrainer - INFO - Epoch[1] Complete") == 2  # ignite logs on both ranks
    assert log.count("-- train_loss:") == 2  # rank 0's StatsHandler alone: 4 // 2 iterations
    state = torch.load(tmp_path / "models" / "recon_finetuned.pt", map_location="cpu", weights_only=True)
    ReconStage(RECON, torch.device("cpu")).network.load_state_dict(state)


@pytest.mark.parametrize("recon", ["brain_mri_recon_rvn", "brain_mri_recon_varnet", "brain_mri_recon_unet"])
def test_every_cartesian_reconstruction_bundle_gives_the_slabs_a_preprocessing_that_reads_files(dataset, tmp_path, recon):
    """`KspaceSlabs` hands each slice as a file and a plane. The bundles whose ``train#preprocessing``
    takes the data engine's in-memory k-space (Recurrent VarNet, E2E-VarNet) must be read through
    their ``train#file_preprocessing``: with the other, the default joint fine-tuning failed on its
    first slab (an fft of the file name). (ReconResNet trains radial by default and refuses this
    Cartesian file, naming it.)"""
    file = dataset / "train" / "mni_kspace.h5"
    with h5py.File(file) as f:
        planes = f["kspace"].shape[-2:]
    preprocessing = _train(dataset, tmp_path, recon_bundle=recon).parser.get_parsed_content("train#preprocessing")
    item = preprocessing({"kspace": str(file), "slice": 3})
    assert torch.is_tensor(item["target"]) and item["target"].shape[-2:] == planes, (item["target"].shape, planes)
    assert torch.isfinite(torch.as_tensor(item["target"])).all() and float(torch.as_tensor(item["scale"])) > 0
