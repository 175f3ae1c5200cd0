"""Registration library: affine pre-alignment, random diffeomorphisms, Jacobian figures, the
coarse-grid VoxelMorph, the loss and the pair transforms."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.networks.blocks import Warp

from mribundles import sample_data
from mribundles.data import registration_pairs
from mribundles.engines import PrepareBatchKeys
from mribundles.metrics.registration import folding_fraction, jacobian_determinant, log_jacobian_std, registration_report
from mribundles.networks import CoarseVoxelMorph
from mribundles.registration import RegistrationLoss, affine_align, affine_ddf, random_diffeomorphism
from mribundles.transforms import RandDiffeomorphicPaird


@pytest.fixture(scope="module")
def brain() -> torch.Tensor:
    """The real MNI T1 at 2 mm, (1, 1, 96, 112, 96), in [0, 1]."""
    data = np.asarray(nib.load(sample_data.path("mni152_2009a_t1.nii.gz")).dataobj, np.float32) / 255.0
    volume = torch.from_numpy(data[::2, ::2, ::2].copy())[None, None]
    return F.pad(volume, [0, 96 - volume.shape[4], 0, 112 - volume.shape[3], 0, 96 - volume.shape[2]])


def _theta(degrees: float, shift: float, scale: float = 1.0) -> torch.Tensor:
    a = math.radians(degrees)
    rotation = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]]) * scale
    return torch.cat([rotation, torch.tensor([[shift], [0.0], [0.0]])], dim=1)[None]


def test_affine_ddf_samples_what_affine_grid_samples(brain):
    theta = _theta(7.0, 0.05, 1.05)
    expected = F.grid_sample(brain, F.affine_grid(theta, list(brain.shape), align_corners=False), align_corners=False)
    warped = Warp(mode="bilinear", padding_mode="zeros")(brain, affine_ddf(theta, brain.shape[2:]))
    assert torch.allclose(warped, expected, atol=1e-5)
    assert affine_ddf(torch.eye(3, 4)[None], (4, 5, 6)).abs().max() < 1e-6  # identity: no displacement


def test_affine_align_undoes_a_known_affine(brain):
    """Moving = the brain under a known rotation, shift and scaling; the fit maps it back."""
    truth = _theta(8.0, 0.06, 1.04)
    moving = F.grid_sample(brain, F.affine_grid(truth, list(brain.shape), align_corners=False), align_corners=False)
    theta = affine_align(moving, brain, scales=(4, 2), steps=(100, 30))
    aligned = Warp(mode="bilinear", padding_mode="zeros")(moving, affine_ddf(theta, brain.shape[2:]))
    before, after = (moving - brain).abs().mean(), (aligned - brain).abs().mean()
    assert after < 0.35 * before, (before, after)
    # composing the fitted map with the true one gives (nearly) the identity
    square = lambda t: torch.cat([t[0], torch.tensor([[0.0, 0, 0, 1]])])  # noqa: E731
    composed = square(truth) @ square(theta)
    assert torch.allclose(composed[:3], torch.eye(3, 4), atol=0.03), composed


def test_random_diffeomorphism_is_smooth_invertible_and_seeded():
    shape = (48, 48, 48)
    ddf = random_diffeomorphism(shape, max_std=4.0, control_spacing=12, generator=torch.Generator().manual_seed(1))
    again = random_diffeomorphism(shape, max_std=4.0, control_spacing=12, generator=torch.Generator().manual_seed(1))
    other = random_diffeomorphism(shape, max_std=4.0, control_spacing=12, generator=torch.Generator().manual_seed(2))
    assert ddf.shape == (1, 3, *shape) and torch.equal(ddf, again) and not torch.equal(ddf, other)
    assert ddf.abs().max() > 0.5  # it does deform
    assert folding_fraction(ddf) == 0.0  # scaling and squaring: no folding
    still = random_diffeomorphism(shape, max_std=0.0, control_spacing=12)
    assert still.abs().max() == 0


def test_jacobian_of_linear_and_folding_fields():
    grid = torch.stack(torch.meshgrid(*[torch.arange(10.0)] * 3, indexing="ij"))  # (3, 10, 10, 10)
    linear = torch.tensor([[0.2, 0.1, 0.0], [0.0, -0.3, 0.05], [0.1, 0.0, 0.4]])
    ddf = torch.einsum("ij,j...->i...", linear, grid)[None].double()
    det = jacobian_determinant(ddf)
    assert torch.allclose(det, torch.linalg.det(torch.eye(3, dtype=torch.float64) + linear.double()).expand_as(det))
    assert log_jacobian_std(ddf) < 1e-6 and folding_fraction(ddf) == 0.0
    mirror = torch.zeros_like(ddf)
    mirror[:, 0] = -2 * grid[0]  # x -> -x: every voxel folds
    assert folding_fraction(mirror) == 1.0
    inside = torch.zeros(1, 10, 10, 10, dtype=torch.bool)
    inside[:, :5] = True
    half = torch.where(inside[:, None], mirror, torch.zeros_like(mirror))
    assert 0.35 < folding_fraction(half) < 0.65 and folding_fraction(half, ~inside) < 0.15  # mask: only where it counts


def test_registration_report_dice_and_hd95_as_monai_computes_them():
    labels = torch.zeros(1, 20, 20, 20)
    labels[:, 5:15, 5:15, 5:10] = 1
    labels[:, 5:15, 5:15, 10:15] = 2
    shifted = torch.roll(labels, 2, dims=1)
    ddf = torch.zeros(3, 20, 20, 20)
    same = registration_report(ddf, warped_label=labels, fixed_label=labels, class_names=["a", "b"])
    assert same["dice_a"] == pytest.approx(1.0) and same["hd95_b"] == 0.0 and same["folding_percent"] == 0.0
    moved = registration_report(ddf, warped_label=shifted, fixed_label=labels, class_names=["a", "b"])
    assert moved["dice_a"] == pytest.approx(0.8) and moved["hd95_a"] == pytest.approx(2.0)  # 8 of 10 rows overlap
    assert moved["dice_mean"] == pytest.approx(0.8)
    assert "dice_a" not in registration_report(ddf)


def test_coarse_voxelmorph_returns_the_field_in_input_voxels():
    """A backbone that predicts a constant velocity of 1 coarse voxel along x: on the input grid
    (factor 2) the displacement is 2 voxels, away from the borders."""
    net = CoarseVoxelMorph(channels=(8, 8, 8, 8), unet_out_channels=8, final_conv_channels=(8,), factor=2)
    moving = torch.rand(1, 1, 32, 32, 32)
    assert net(moving, moving).shape == (1, 3, 32, 32, 32)

    class Constant(torch.nn.Module):
        def forward(self, x):
            v = torch.zeros(x.shape[0], 3, *x.shape[2:])
            v[:, 0] = 1.0
            return v

    net.voxelmorph.backbone = Constant()
    ddf = net(moving, moving)
    assert torch.allclose(ddf[:, 0, 8:24, 8:24, 8:24], torch.tensor(2.0), atol=1e-4)
    assert ddf[:, 1:].abs().max() < 1e-6


def test_loss_rewards_alignment_and_reaches_the_field_through_the_labels():
    fixed = torch.rand(1, 1, 24, 24, 24)
    labels = (fixed > 0.5).float()
    loss = RegistrationLoss(num_classes=2, kernel_size=5)
    ddf = torch.zeros(1, 3, 24, 24, 24, requires_grad=True)
    aligned = loss(ddf, {"moving_image": fixed, "fixed_image": fixed, "moving_label": labels, "fixed_label": labels})
    assert aligned.item() == pytest.approx(-1.0, abs=1e-3)  # LNCC -1, no smoothness cost, Dice loss 0
    other = loss(ddf, {"moving_image": torch.rand_like(fixed), "fixed_image": fixed})
    assert other.item() > -0.2
    shifted = torch.roll(labels, 3, dims=2)
    value = loss(ddf, {"moving_image": fixed, "fixed_image": fixed, "moving_label": shifted, "fixed_label": labels})
    value.backward()
    assert ddf.grad.abs().sum() > 0


def test_random_pair_transform_makes_two_different_views_of_one_brain(brain):
    image = brain[0, :, :48, :48, :48]
    label = (image > 0.3).float()
    pair = RandDiffeomorphicPaird("image", "label", max_std=3.0, control_spacing=12)
    pair.set_random_state(0)
    d = pair({"image": image, "label": label})
    assert set(d) == {"moving_image", "fixed_image", "moving_label", "fixed_label"}
    assert not torch.equal(d["moving_image"], d["fixed_image"])
    assert set(d["moving_label"].unique().tolist()) <= {0.0, 1.0}  # nearest neighbour: labels stay labels
    pair.set_random_state(0)
    assert torch.equal(pair({"image": image, "label": label})["moving_image"], d["moving_image"])


def test_registration_pairs_and_dict_targets():
    assert registration_pairs("m.nii", "f.nii") == [{"moving_image": "m.nii", "fixed_image": "f.nii"}]
    pairs = registration_pairs(["a", "b"], "atlas", ["la", "lb"], "latlas")
    assert pairs[1] == {"moving_image": "b", "fixed_image": "atlas", "moving_label": "lb", "fixed_label": "latlas"}
    with pytest.raises(ValueError, match="moving_label: 3 entries for 2"):
        registration_pairs(["a", "b"], "atlas", ["1", "2", "3"])
    batch = {k: torch.full((1, 1, 2, 2, 2), float(i)) for i, k in enumerate(["moving_image", "fixed_image", "moving_label"])}
    prepare = PrepareBatchKeys("moving_image", ["moving_image", "fixed_image", "moving_label", "fixed_label"], ["fixed_image"])
    inputs, target, args, _ = prepare(batch)
    assert set(target) == {"moving_image", "fixed_image", "moving_label"} and torch.equal(args[0], batch["fixed_image"])


def test_refinement_recovers_a_known_deformation_without_folding(brain):
    """Moving = a real brain crop under a known random diffeomorphism. Refining a zero velocity
    on the pair brings the images together, with (numerically) next to no folding."""
    from mribundles.registration import refine_velocity
    from monai.networks.blocks import DVF2DDF

    fixed = brain[:, :, 32:64, 40:72, 40:72].contiguous()
    truth = random_diffeomorphism(fixed.shape[2:], max_std=2.0, control_spacing=8, generator=torch.Generator().manual_seed(1))
    moving = Warp(mode="bilinear", padding_mode="border")(fixed, truth)
    velocity = refine_velocity(torch.zeros(1, 3, 32, 32, 32), moving, fixed, steps=40, lr=0.1)
    ddf = DVF2DDF(num_steps=7, mode="bilinear", padding_mode="zeros")(velocity)
    before = (moving - fixed).abs().mean()
    after = (Warp(mode="bilinear", padding_mode="border")(moving, ddf) - fixed).abs().mean()
    assert after < 0.7 * before, (before, after)
    assert folding_fraction(ddf) < 0.001  # the bar: under 0.1 % of voxels
    assert torch.equal(refine_velocity(velocity, moving, fixed, steps=0), velocity)


def test_refinement_on_a_coarser_grid_improves_the_networks_alignment_without_folding(brain):
    """The bundle's refinement (`Refinement`, factor 2: a correction optimised on a grid twice
    as coarse as the network's) brings a pair under a known deformation closer than the network
    alone, without folding; the config's mapping reaches the network as the same settings."""
    from mribundles.registration import Refinement

    fixed = brain[:, :, 16:80, 24:88, 16:80].contiguous()
    truth = random_diffeomorphism(fixed.shape[2:], max_std=3.0, control_spacing=16, generator=torch.Generator().manual_seed(2))
    moving = Warp(mode="bilinear", padding_mode="border")(fixed, truth)
    torch.manual_seed(0)
    net = CoarseVoxelMorph(channels=(8, 8, 8, 8), unet_out_channels=8, final_conv_channels=(8,), factor=2).eval()
    error = lambda ddf: (Warp(mode="bilinear", padding_mode="border")(moving, ddf) - fixed).abs().mean()  # noqa: E731
    with torch.no_grad():
        alone = net(moving, fixed)
        net.refine = Refinement(steps=30, lr=0.2, smoothness=0.5, kernel_size=3, factor=2, integration_steps=5)
        refined = net(moving, fixed)
    assert error(refined) < 0.8 * error(alone), (error(alone), error(refined))
    assert folding_fraction(refined) < 0.001
    assert CoarseVoxelMorph(refine={"steps": 8, "factor": 2}).refine == Refinement(steps=8, factor=2)
    assert CoarseVoxelMorph().refine.steps == 0
