"""Registration pairs synthesised from real label maps (mribundles.synth.registration): seeded,
shapes, the labels follow each deformed image, the two sides differ in contrast, two heads are
affinely aligned, and the registration bundle trains on them."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from bundle_checks import REPO, check_one_epoch_trains
from mribundles.sample_data import path as sample_path
from mribundles.synth import SyntheticPairDataset
from test_reg_bundle import tiny_dataset  # noqa: F401  (the real pair, cut small, for validation)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BUNDLE = REPO / "bundles" / "brain_mri_reg_voxelmorph"
LABEL_MAP = sample_path("synthseg_training_seg_01.nii.gz")
PATCH = (32, 40, 48)
STRETCH = 1.1


@pytest.fixture(scope="module")
def two_heads(tmp_path_factory) -> Path:
    """A data root (``../shared/data``'s layout) with two label maps: the shipped real head
    (subject_a) and a copy stretched by 10 % from left to right (subject_b), a second head that
    differs from the first by an affine map."""
    root = tmp_path_factory.mktemp("pair_heads")
    folder = root / "labels" / "synthseg"
    folder.mkdir(parents=True)
    (folder / "subject_a.nii.gz").symlink_to(LABEL_MAP)
    image = nib.load(LABEL_MAP)
    assert nib.aff2axcodes(image.affine)[0] in "LR"  # the stored first axis runs left-right
    data = np.asarray(image.dataobj)
    box = [slice(int(a.min()), int(a.max()) + 1) for a in np.nonzero(data)]
    head = data[tuple(box)]
    rows = (np.arange(round(head.shape[0] * STRETCH)) / STRETCH).astype(int)  # nearest-neighbour stretch
    affine = image.affine.copy()
    affine[:3, 3] = image.affine[:3, :3] @ np.array([s.start for s in box]) + image.affine[:3, 3]
    nib.save(nib.Nifti1Image(head[rows], affine), folder / "subject_b.nii.gz")
    return root


def _pairs(folder, **kwargs) -> SyntheticPairDataset:
    return SyntheticPairDataset(folder, length=4, patch_size=PATCH, **kwargs)


def _edge_ratio(image: torch.Tensor, label: torch.Tensor) -> float:
    """Mean intensity gradient on the label boundaries over that everywhere else: high when the
    boundaries lie on the image's edges."""
    boundary = torch.zeros_like(label, dtype=torch.bool)
    for axis in range(3):
        change = label.diff(dim=axis) != 0
        pad = [0, 0] * (2 - axis)
        boundary |= torch.nn.functional.pad(change, pad + [0, 1]) | torch.nn.functional.pad(change, pad + [1, 0])
    gradient = torch.stack(torch.gradient(image)).norm(dim=0)
    return float(gradient[boundary].mean() / gradient[~boundary].mean())


def test_items_are_seeded_pairs_of_images_and_tissue_labels(two_heads):
    ds = _pairs(two_heads / "labels" / "synthseg", seed=1)
    first = ds[0]
    for side in ("moving", "fixed"):
        assert first[f"{side}_image"].shape == (1, *PATCH) and first[f"{side}_image"].dtype == torch.float32
        assert first[f"{side}_label"].shape == (1, *PATCH) and first[f"{side}_label"].dtype == torch.uint8
        assert set(first[f"{side}_label"].unique().tolist()) == {0, 1, 2, 3}, "patches lie in the brain"
    assert not torch.equal(first["moving_label"], first["fixed_label"]), "each side is deformed on its own"
    again = _pairs(two_heads / "labels" / "synthseg", seed=1)[0]
    assert all(torch.equal(first[k], again[k]) for k in ("moving_image", "fixed_image", "moving_label", "fixed_label"))
    assert not torch.equal(first["fixed_image"], ds[0]["fixed_image"]), "training draws a new pair every time"
    validation = _pairs(two_heads / "labels" / "synthseg", seed=1, fresh=False)
    assert torch.equal(validation[2]["moving_image"], validation[2]["moving_image"])


def test_pairs_join_two_heads_or_one_head_deformed_twice(two_heads):
    folder = two_heads / "labels" / "synthseg"
    different = [_pairs(folder, seed=2, same_subject_prob=0.0)[i] for i in range(4)]
    assert all(item["moving_subject"] != item["fixed_subject"] for item in different)
    assert {item["fixed_subject"] for item in different} == {"subject_a", "subject_b"}
    same = _pairs(folder, seed=2, same_subject_prob=1.0)[0]
    assert same["moving_subject"] == same["fixed_subject"]
    alone = _pairs([LABEL_MAP], seed=2, same_subject_prob=0.0)[0]  # one map: always deformed twice
    assert alone["moving_subject"] == alone["fixed_subject"] == "synthseg_training_seg_01"
    with pytest.raises(ValueError, match="same_subject_prob"):
        _pairs(folder, same_subject_prob=1.5)


def test_two_heads_that_differ_by_an_affine_map_come_out_aligned(two_heads):
    """With no random deformation or affine map, a pair of the head and its stretched copy
    overlaps closely (placed by their centres alone, some pairs fall to GM Dice 0.45): the
    affine step found the stretch. What overlap is left is the half-voxel shift and the jagged
    edges of the copy's nearest-neighbour stretch, which the thin cortex feels most."""
    still = {"max_std": 0.0, "max_rotation_deg": 0.0, "scale_range": (1.0, 1.0), "max_shear": 0.0}
    ds = _pairs(two_heads / "labels" / "synthseg", seed=3, same_subject_prob=0.0, **still)
    for i in range(3):
        item = ds[i]
        moving, fixed = item["moving_label"][0], item["fixed_label"][0]
        dice = [float(2 * ((moving == c) & (fixed == c)).sum() / ((moving == c).sum() + (fixed == c).sum())) for c in (1, 2, 3)]
        assert dice[2] > 0.8 and dice[1] > 0.65 and dice[0] > 0.65, dice
    stretched = ds._placement(1).matrix  # subject_b in subject_a's frame
    assert torch.allclose(stretched, torch.diag(torch.tensor([STRETCH, 1.0, 1.0])), atol=0.01), stretched


def test_each_sides_labels_follow_its_own_deformed_image():
    """Noise-free T1-like pairs: each side's label boundaries lie on its image's edges (the
    gradient there is well above the rest), and more so than the other side's labels do."""
    ds = _pairs([LABEL_MAP], seed=0, skull_strip_prob=1.0, thick_slice_prob=0.0, max_noise=0.0, contrasts=["t1"])
    for i in range(4):
        item = ds[i]
        for side, other in (("moving", "fixed"), ("fixed", "moving")):
            image = item[f"{side}_image"][0]
            own, crossed = _edge_ratio(image, item[f"{side}_label"][0]), _edge_ratio(image, item[f"{other}_label"][0])
            assert own > 1.5 and own > crossed, (i, side, own, crossed)


def test_the_two_sides_take_independent_contrasts():
    """Drawing T1 or T2 for each side on its own: white matter is brighter than CSF on a T1-like
    side and darker on a T2-like one, and over a few pairs the sides disagree as often as not."""
    ds = _pairs([LABEL_MAP], seed=4, skull_strip_prob=1.0, thick_slice_prob=0.0, max_noise=0.0, contrasts=["t1", "t2"])
    agreements = []
    for i in range(4):
        item = ds[i]
        t1_like = []
        for side in ("moving", "fixed"):
            image, label = item[f"{side}_image"][0], item[f"{side}_label"][0]
            t1_like.append(bool(image[label == 3].median() > image[label == 1].median()))
        agreements.append(t1_like[0] == t1_like[1])
    assert True in agreements and False in agreements, agreements
    randomised = _pairs([LABEL_MAP], seed=4, skull_strip_prob=1.0, contrasts=["random"])[0]
    means = [torch.stack([randomised[f"{s}_image"][0][randomised[f"{s}_label"][0] == c].mean() for c in (1, 2, 3)]) for s in ("moving", "fixed")]
    assert (means[0] - means[1]).abs().max() > 0.05, means


def test_the_bundle_trains_an_epoch_on_synthesised_pairs(two_heads, tiny_dataset, tmp_path):  # noqa: F811
    """train.json, tiny: two iterations, both drawn from the label maps, a finite loss, the
    weights and a resumable checkpoint written, validation on the real pair in both directions."""
    override = {"dataset_dir": str(tiny_dataset), "synth_data_root": str(two_heads),
                "output_dir": str(tmp_path / "eval"), "ckpt_dir": str(tmp_path / "models"),
                "max_epochs": 1, "iterations_per_epoch": 2, "val_interval": 1, "crop_size": [32, 32, 32],
                "draw_shares": {"synthesised": 1.0, "real": 0.0}, "device": "$torch.device('cpu')"}
    train = check_one_epoch_trains(BUNDLE, override)
    assert sum(train.parser.get_parsed_content("train#synth_dataset").draws.values()) == 2
    assert len(list((tmp_path / "eval" / "validation").glob("*_registration.json"))) == 2
    train.finalize()
