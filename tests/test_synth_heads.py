"""Whole synthetic heads (`synth.heads`), the transform that stands in for a loaded scan
(`transforms.SynthesizeHeadd`) and their datalist (`transforms.synthetic_degradation_list`),
from the shipped real label map, at 2 to 3 mm so that each head takes about a second."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from mribundles.errors import InvalidInputError
from mribundles.sample_data import path as sample_path
from mribundles.synth.heads import synthesize_head
from mribundles.synth.labels import tissue_labels
from mribundles.synth.segmentation import LabelHead
from mribundles.transforms import SimulateLowResd, SynthesizeHeadd, ToHighResGridd, synthetic_degradation_list

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def head() -> LabelHead:
    return LabelHead(Path(sample_path("synthseg_training_seg_01.nii.gz")))


def test_a_seed_gives_one_head_and_another_seed_another(head):
    first, again = synthesize_head(head, 5, spacing=3.0), synthesize_head(head, 5, spacing=3.0)
    other = synthesize_head(head, 6, spacing=3.0)
    assert torch.equal(first, again)
    assert first.shape != other.shape or (first - other).abs().mean() > 0.01


def test_the_grid_covers_the_head_with_a_background_margin(head):
    image = synthesize_head(head, 1, spacing=2.0, margin=4)
    extent = [n * s for n, s in zip(head.labels.shape, head.spacing)]
    # the deformed head's box (scale up to 1/0.9, rotation up to 10 degrees) and 2 x 4 voxels
    assert all(e / 2.0 + 8 <= n <= 1.45 * e / 2.0 + 8 + 2 * 5 for n, e in zip(image.shape, extent))
    assert image.dtype == torch.float32 and float(image.min()) >= 0 and float(image.max()) == pytest.approx(1.0, abs=1e-6)
    for axis in range(3):  # the margin is air: exactly zero on every side
        assert float(image.narrow(axis, 0, 2).abs().max()) == 0 and float(image.narrow(axis, image.shape[axis] - 2, 2).abs().max()) == 0


def test_skull_stripping_leaves_only_the_brain_lit(head):
    """With every head stripped, the lit volume (above 5 % of the maximum, past the blur's tail)
    is about the brain's; without, about the head's. The bounds allow the random scale (0.9 to
    1.1 per axis: 0.73 to 1.37 in volume)."""
    voxel = 2.0 ** 3 / float(np.prod(head.spacing))
    brain = float((tissue_labels(head.labels) > 0).sum()) / voxel
    whole = float((head.labels > 0).sum()) / voxel
    stripped = float((synthesize_head(head, 3, spacing=2.0, skull_strip_prob=1.0) > 0.05).sum())
    kept = float((synthesize_head(head, 3, spacing=2.0, skull_strip_prob=0.0) > 0.05).sum())
    assert 0.73 < stripped / brain < 1.37 and 0.73 < kept / whole < 1.37
    assert kept > 1.5 * stripped


def test_unknown_contrast_is_refused(head):
    with pytest.raises(ValueError, match="contrasts must be"):
        synthesize_head(head, 0, spacing=3.0, contrasts=("flair",))


def test_the_transform_gives_a_volume_the_superres_chain_takes(tiny_synth_root):
    (entry, _) = synthetic_degradation_list(tiny_synth_root / "labels" / "synthseg", 2, degradations=("kspace",), factors=(2,))
    data = SynthesizeHeadd("image", spacing=2.0)(entry)
    image = data["image"]
    assert isinstance(image, MetaTensor) and image.shape[0] == 1
    np.testing.assert_allclose(np.asarray(image.affine), np.diag([2.0, 2.0, 2.0, 1.0]))
    assert "training_seg_01" in image.meta["filename_or_obj"] and "seed 0" in image.meta["filename_or_obj"]
    pair = ToHighResGridd("image", target_spacing=2.0, factors=(2,))(SimulateLowResd("image", from_data=True)(data))
    assert pair["image"].shape == pair["label"].shape and pair["image"].meta["lowres_factors"] == (1, 2, 2)


def test_the_datalist_cycles_maps_and_degradations_with_distinct_seeds(tmp_path):
    for name in ("a.nii.gz", "b.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    entries = synthetic_degradation_list(tmp_path, 12, factors=(4,), seed=3)
    assert [Path(e["image"]).name for e in entries[:3]] == ["a.nii.gz", "b.nii.gz", "a.nii.gz"]
    assert [(e["degradation"], e["slice_axis"]) for e in entries[:7]] == [
        ("kspace", 0), ("kspace", 1), ("kspace", 2), ("slices", 0), ("slices", 1), ("slices", 2), ("kspace", 0)]
    assert [e["seed"] for e in entries] == list(range(36, 48)) and {e["factor"] for e in entries} == {4}


def test_a_folder_without_label_maps_is_refused_naming_it(tmp_path):
    with pytest.raises(InvalidInputError, match=f"{tmp_path}.*no label maps"):
        synthetic_degradation_list(tmp_path, 4)
