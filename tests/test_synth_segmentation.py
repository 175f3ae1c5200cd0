"""Segmentation examples synthesised from a real label map (mribundles.synth.segmentation):
seeded, the tissue targets follow the deformed labels, skull stripping, resolution loss."""

from __future__ import annotations

import pytest
import torch

from mribundles.errors import InvalidInputError
from mribundles.sample_data import path as sample_path
from mribundles.synth import SyntheticSegmentationDataset, degrade_resolution

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LABEL_MAP = sample_path("synthseg_training_seg_01.nii.gz")


def _dataset(**kwargs) -> SyntheticSegmentationDataset:
    return SyntheticSegmentationDataset([LABEL_MAP], length=4, patch_size=(32, 40, 48), **kwargs)


def test_items_are_patches_of_image_and_tissue_labels_seeded_and_fresh_per_draw():
    ds = _dataset(seed=1)
    first = ds[0]
    assert first["image"].shape == (1, 32, 40, 48) and first["image"].dtype == torch.float32
    assert first["label"].shape == (1, 32, 40, 48) and first["label"].dtype == torch.uint8
    assert set(first["label"].unique().tolist()) <= {0, 1, 2, 3}
    assert bool((first["label"] > 0).any()), "patches are centred in the brain"
    again = _dataset(seed=1)[0]
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["label"], again["label"])
    second_draw = ds[0]  # training draws a new example every time an index comes back
    assert not torch.equal(first["image"], second_draw["image"])
    fixed = _dataset(seed=1, fresh=False)
    assert torch.equal(fixed[2]["image"], fixed[2]["image"])


def test_tissues_take_distinct_intensities_in_a_t1_like_draw():
    """Whatever the contrast, each tissue is a region of its own intensity: the within-class
    spread is well below the spread between the class means."""
    ds = _dataset(seed=3, skull_strip_prob=1.0, thick_slice_prob=0.0, max_noise=0.0)
    separations = []
    for i in range(4):
        item = ds[i]
        image, label = item["image"][0], item["label"][0]
        means = torch.stack([image[label == c].mean() for c in (1, 2, 3) if bool((label == c).any())])
        within = torch.stack([image[label == c].std() for c in (1, 2, 3) if bool((label == c).any())]).mean()
        separations.append(float(means.std() / within))
    assert max(separations) > 1.0, separations


def test_skull_stripped_examples_have_a_zero_background_and_whole_heads_do_not():
    """Outside the brain a skull-stripped example is exactly zero (but for the few vessel and
    lesion voxels, which are no tissue class yet were imaged); a whole head shows scalp, skull
    and noise there."""

    def zero_fraction_outside_brain(item: dict) -> float:
        outside = item["image"][item["label"] == 0]
        return float((outside == 0).float().mean()) if outside.numel() else 1.0

    stripped = _dataset(seed=5, skull_strip_prob=1.0)
    assert min(zero_fraction_outside_brain(stripped[i]) for i in range(4)) > 0.97
    heads = _dataset(seed=5, skull_strip_prob=0.0, max_noise=0.05)
    assert min(zero_fraction_outside_brain(heads[i]) for i in range(4)) < 0.5


def test_the_transform_is_applied_to_every_item():
    ds = _dataset(seed=2, transform=lambda item: {**item, "image": item["image"] * 0 + 7})
    assert torch.all(ds[1]["image"] == 7)


def test_thick_slices_remove_detail_along_one_axis_only():
    """4 mm slices along z: a pattern that varies only along z loses most of its detail, one that
    varies only across the slices (in x and y) passes unchanged."""
    torch.manual_seed(0)
    along_z = torch.rand(1, 1, 32).expand(32, 32, 32).contiguous()
    in_plane = torch.rand(32, 32, 1).expand(32, 32, 32).contiguous()
    thick = degrade_resolution(along_z, (1.0, 1.0, 4.0))
    assert thick.shape == along_z.shape
    detail = (thick[..., 1:] - thick[..., :-1]).abs().mean() / (along_z[..., 1:] - along_z[..., :-1]).abs().mean()
    assert detail < 0.3, float(detail)
    assert torch.allclose(degrade_resolution(in_plane, (1.0, 1.0, 4.0)), in_plane, atol=1e-4)
    assert torch.equal(degrade_resolution(along_z, (1.0, 1.0, 1.0)), along_z)


def test_no_label_map_left_is_refused(tmp_path):
    with pytest.raises(InvalidInputError, match="no label maps"):
        SyntheticSegmentationDataset(tmp_path, length=1)
    with pytest.raises(InvalidInputError, match="no label maps"):
        SyntheticSegmentationDataset([LABEL_MAP], length=1, exclude=["synthseg_training_seg_01"])


def test_a_t1_only_contrast_list_images_white_matter_brighter_than_grey_and_grey_than_csf():
    ds = _dataset(seed=4, contrasts=["t1"], skull_strip_prob=1.0, thick_slice_prob=0.0, max_noise=0.0)
    for i in range(3):
        item = ds[i]
        image, label = item["image"][0], item["label"][0]
        means = [float(image[label == c].median()) for c in (1, 2, 3)]
        assert means[0] < means[1] < means[2], means  # the T1 preset's order, whatever the bias and gamma


def test_an_unknown_contrast_is_refused():
    with pytest.raises(ValueError, match="flair"):
        _dataset(contrasts=["t1", "flair"])


def test_the_mixture_sampler_draws_each_part_in_its_share_whatever_its_length():
    from torch.utils.data import ConcatDataset

    from mribundles.distributed import mixture_sampler

    parts = ConcatDataset([list(range(200)), ["real"]])  # an epoch of synthesised items, one real volume
    torch.manual_seed(0)
    draws = list(mixture_sampler(parts, [0.75, 0.25], iterations=2000, batch_size=2))
    assert len(draws) == 4000
    real_share = sum(index == 200 for index in draws) / len(draws)
    assert abs(real_share - 0.25) < 0.03, real_share
    with pytest.raises(ValueError, match="one non-negative number per part"):
        mixture_sampler(parts, [1.0], iterations=10)
