"""Resolution loss and interpolation back, on one grid convention: LR voxel i covers HR voxels
f*i .. f*i+f-1 and its centre lies at HR index f*i + (f-1)/2. Known structures land where they
should; affines agree with MONAI's world-coordinate resampling; the transforms and the network
of the super-resolution bundle keep it. Every test asserts on values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor

from mribundles.errors import InvalidInputError
from mribundles.handlers.volume_metric import volume_metric
from mribundles.metrics import psnr
from mribundles.networks import ResidualUNet3d
from mribundles.physics import (
    crop_to_multiple,
    highres_affine,
    interpolate,
    lowres_affine,
    sinc_interpolate,
    thick_slices,
    truncate_kspace,
)
from mribundles.physics.interpolate import interpolation_matrix
from mribundles.transforms import (
    RestoreIntensityd,
    ScaleIntensityByPercentiled,
    SimulateLowResd,
    ToHighResGridd,
)

# FreeSurfer's conformed LIA orientation at 1 mm (as the voxelmorph subject): axis 1 is the
# inferior-superior axis, so axial slices are stacked along it.
LIA = np.array([[-1.0, 0, 0, 80], [0, 0, 1.0, -112], [0, -1.0, 0, 96], [0, 0, 0, 1.0]])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _world(affine: np.ndarray, index) -> np.ndarray:
    return (affine @ np.append(np.asarray(index, dtype=np.float64), 1.0))[:3]


# ------------------------------------------------------------------------- grid convention


def test_lowres_affine_puts_each_lr_centre_at_the_centre_of_its_hr_voxels():
    factors = (4, 1, 3)
    lr = lowres_affine(LIA, factors)
    for i, j, k in [(0, 0, 0), (2, 5, 7), (9, 1, 3)]:
        hr_centre = np.mean([_world(LIA, (4 * i + a, j, 3 * k + c)) for a in range(4) for c in range(3)], axis=0)
        assert np.allclose(_world(lr, (i, j, k)), hr_centre)
    assert np.allclose(np.linalg.norm(lr[:3, :3], axis=0), [4, 1, 3])  # voxel sizes in mm
    assert np.allclose(highres_affine(lr, factors), LIA)


def test_both_grids_cover_the_same_field_of_view():
    """The outer faces of the first and last LR voxels are those of the HR grid."""
    n, f = 12, 4
    lr = lowres_affine(np.eye(4), (f, 1, 1))
    assert np.isclose(_world(lr, (-0.5, 0, 0))[0], -0.5) and np.isclose(_world(lr, (n // f - 0.5, 0, 0))[0], n - 0.5)


def test_thick_slices_average_each_slab():
    volume = _randn(5, 6, 12)
    lr = thick_slices(volume, 4, axis=2)
    assert lr.shape == (5, 6, 3)
    for i in range(3):
        torch.testing.assert_close(lr[:, :, i], volume[:, :, 4 * i : 4 * i + 4].mean(-1))
    with pytest.raises(ValueError, match="not a multiple of the factor 5"):
        thick_slices(volume, 5, axis=2)


@pytest.mark.parametrize("mode", ["sinc", "cubic", "linear"])
@pytest.mark.parametrize("degradation", ["kspace", "slices"])
def test_a_slab_on_one_lr_voxel_comes_back_centred_on_its_hr_voxels(mode, degradation):
    """A bright slab covering exactly HR slices 12..15 (LR voxel 3 at factor 4, centre 13.5):
    after degradation and each interpolation the profile is symmetric about 13.5 and peaks on
    HR slices 13 and 14. A half-voxel error in the convention would break both."""
    f = 4
    volume = torch.zeros(4, 4, 32, dtype=torch.float64)
    volume[:, :, 12:16] = 1.0
    lr = truncate_kspace(volume, (1, 1, f)) if degradation == "kspace" else thick_slices(volume, f, axis=2)
    if degradation == "slices":
        assert torch.equal(lr[0, 0], torch.tensor([0, 0, 0, 1.0, 0, 0, 0, 0], dtype=torch.float64))
    profile = interpolate(lr, (1, 1, f), mode)[0, 0]
    assert profile.shape == (32,)
    torch.testing.assert_close(profile[6:14].flip(0), profile[14:22], atol=1e-9, rtol=0)  # mirror about 13.5
    assert set(torch.topk(profile, 2).indices.tolist()) == {13, 14}


@pytest.mark.parametrize("centre", [9, 10, 11, 12])
def test_a_plane_anywhere_stays_at_its_hr_position_through_kspace_truncation(centre):
    """A one-voxel bright plane at any HR index (on or between LR centres) comes back from 4x
    truncation and sinc interpolation as a symmetric lobe peaking at that very index."""
    volume = torch.zeros(3, 32, 3, dtype=torch.float64)
    volume[:, centre] = 1.0
    profile = sinc_interpolate(truncate_kspace(volume, (1, 4, 1)), (1, 4, 1))[1, :, 1]
    assert int(profile.argmax()) == centre
    torch.testing.assert_close(profile[centre - 6 : centre].flip(0), profile[centre + 1 : centre + 7], atol=1e-12, rtol=0)
    assert float(profile.sum()) == pytest.approx(1.0)  # k-space truncation keeps the mean (DC)


def test_a_cube_lands_at_its_world_position_through_the_transforms():
    """SimulateLowResd then ToHighResGridd on an LIA volume: the reconstructed cube's centre of
    mass, mapped through the output's affine, is the original cube's world position."""
    volume = torch.zeros(1, 24, 28, 20)
    volume[:, 9:13, 14:18, 5:8] = 100.0
    image = MetaTensor(volume, affine=torch.as_tensor(LIA), meta={"filename_or_obj": "cube.nii.gz"})
    centre_world = _world(LIA, [10.5, 15.5, 6.0])
    for degradation in ("kspace", "slices"):
        d = SimulateLowResd("image", degradation=degradation, factor=4, target_key="reference")({"image": image})
        lr = d["image"]
        expected = (6, 28, 5) if degradation == "kspace" else (24, 7, 20)  # axial: axis 1 is inferior-superior
        assert tuple(lr.shape[1:]) == expected, degradation
        out = ToHighResGridd("image", mode="sinc")(d)["image"]
        assert out.shape == d["reference"].shape == (1, 24, 28, 20)
        assert np.allclose(out.affine.numpy(), LIA) and np.allclose(d["reference"].affine.numpy(), LIA)
        weights = out[0].clamp_min(0).double() ** 4  # emphasise the cube over ringing
        grid = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float64) for s in weights.shape], indexing="ij"))
        com = (grid * weights).sum((1, 2, 3)) / weights.sum()
        assert np.allclose(_world(out.affine.numpy(), com.numpy()), centre_world, atol=0.05), degradation


def test_lr_affine_agrees_with_monai_world_resampling():
    """MONAI's SpatialResample maps the LR volume (with our LR affine) onto the HR affine through
    world coordinates; it must give our linear interpolation wherever no edge is involved."""
    from monai.transforms import SpatialResample

    f = (2, 4, 1)
    lr_data = _randn(1, 8, 6, 5, seed=3).float()
    lr = MetaTensor(lr_data, affine=torch.as_tensor(lowres_affine(LIA, f)))
    resampled = SpatialResample(mode="bilinear", padding_mode="border", align_corners=True)(
        lr, dst_affine=torch.as_tensor(LIA), spatial_size=(16, 24, 5)
    )
    ours = interpolate(lr_data, f, "linear")
    interior = (slice(None), slice(1, 15), slice(2, 22))  # half an LR voxel from either end
    torch.testing.assert_close(resampled.as_tensor()[interior], ours[interior], atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- interpolation


def test_linear_and_cubic_are_pytorchs_align_corners_false():
    lr = _randn(1, 1, 7, 9, 5, seed=1)
    torch.testing.assert_close(interpolate(lr, (4, 3, 2), "linear"), F.interpolate(lr, scale_factor=(4, 3, 2), mode="trilinear", align_corners=False))
    plane = _randn(1, 1, 7, 9, seed=2)
    ours = interpolate(plane[..., None], (4, 3, 1), "cubic", cubic_a=-0.75)[..., 0]  # PyTorch's bicubic uses a = -0.75
    torch.testing.assert_close(ours, F.interpolate(plane, scale_factor=(4, 3), mode="bicubic", align_corners=False))


def test_cubic_reproduces_quadratics_inside_the_volume():
    """Keys' a = -0.5 kernel is exact for polynomials up to degree 2 (away from the edges)."""
    f, m = 3, 10
    u = torch.arange(m, dtype=torch.float64)
    values = 0.3 * u**2 - 2 * u + 1
    hr_index = torch.arange(m * f, dtype=torch.float64)
    position = (hr_index - (f - 1) / 2) / f  # the LR coordinate each HR voxel reads
    expected = 0.3 * position**2 - 2 * position + 1
    got = interpolation_matrix(m, f, "cubic") @ values
    torch.testing.assert_close(got[2 * f : -2 * f], expected[2 * f : -2 * f])
    assert torch.allclose(interpolation_matrix(m, f, "cubic").sum(1), torch.ones(m * f, dtype=torch.float64))


@pytest.mark.parametrize("factors", [(4, 4, 1), (1, 1, 4), (2, 3, 4), (3, 3, 1)])
def test_truncation_undoes_zero_padding_and_their_product_is_a_projection(factors):
    """truncate(sinc(lr)) == lr for an LR volume without a Nyquist line (odd sizes), and
    sinc(truncate(.)) is a projection for any size."""
    lr = _randn(2, 5, 3, 7, seed=4)
    torch.testing.assert_close(truncate_kspace(sinc_interpolate(lr, factors), factors), lr)
    hr = crop_to_multiple(_randn(2, 16, 12, 8, seed=5), factors)
    low = sinc_interpolate(truncate_kspace(hr, factors), factors)
    torch.testing.assert_close(sinc_interpolate(truncate_kspace(low, factors), factors), low)


def test_even_sizes_lose_only_the_nyquist_line():
    """An even LR size: truncate(sinc(lr)) is lr without its alternating (Nyquist) component."""
    lr = _randn(6, 4, 1, seed=7)
    nyquist = torch.tensor([1.0, -1.0] * 3, dtype=torch.float64)[:, None, None]
    back = truncate_kspace(sinc_interpolate(lr, (4, 1, 1)), (4, 1, 1))
    expected = lr - nyquist * (lr * nyquist).mean(0, keepdim=True)
    torch.testing.assert_close(back, expected)


@pytest.mark.parametrize("shape, factors", [((15, 12, 7), (3, 4, 1)), ((16, 12, 7), (4, 2, 1))])
def test_truncation_is_an_ideal_low_pass_filter(shape, factors):
    """Zero-padded interpolation of the truncated volume equals the volume with every frequency
    |k| >= M/2 zeroed in a 3D FFT (M = 5, 3: no Nyquist line; M = 4, 6: Nyquist dropped)."""
    hr = _randn(*shape, seed=6)
    spectrum = torch.fft.fftn(hr)
    kx, ky = (torch.fft.fftfreq(n, 1 / n).abs() for n in shape[:2])
    mx, my = (n // f for n, f in zip(shape[:2], factors))
    mask = ((kx < mx / 2)[:, None, None] & (ky < my / 2)[None, :, None]).to(spectrum.dtype)
    expected = torch.fft.ifftn(spectrum * mask).real
    torch.testing.assert_close(sinc_interpolate(truncate_kspace(hr, factors), factors), expected)


def test_constant_volumes_survive_every_step():
    volume = torch.full((8, 12, 16), 3.0, dtype=torch.float64)
    for lr in (truncate_kspace(volume, (4, 4, 1)), thick_slices(volume, 4, axis=2)):
        assert torch.allclose(lr, torch.tensor(3.0, dtype=torch.float64))
    for mode in ("sinc", "cubic", "linear"):
        assert torch.allclose(interpolate(torch.full((2, 3, 4), 3.0, dtype=torch.float64), (2, 3, 4), mode), torch.tensor(3.0, dtype=torch.float64))


def test_float32_volumes_stay_float32_and_match_float64():
    hr = _randn(16, 12, 8, seed=7)
    low32 = sinc_interpolate(truncate_kspace(hr.float(), (4, 4, 1)), (4, 4, 1))
    assert low32.dtype == torch.float32
    torch.testing.assert_close(low32.double(), sinc_interpolate(truncate_kspace(hr, (4, 4, 1)), (4, 4, 1)), atol=1e-5, rtol=0)


# -------------------------------------------------------------------------------- transforms


def test_to_highres_grid_refuses_spacings_it_cannot_refine(tmp_path):
    grid = ToHighResGridd("image", target_spacing=1.0, factors=(2, 4))
    source = str(tmp_path / "lr.nii.gz")
    odd = MetaTensor(torch.ones(1, 8, 8, 8), affine=torch.diag(torch.tensor([1.0, 1.0, 2.5, 1.0], dtype=torch.float64)), meta={"filename_or_obj": source})
    with pytest.raises(InvalidInputError, match=r"voxel size 2.5 mm along axis 2 is not a whole multiple") as info:
        grid({"image": odd})
    assert str(info.value).startswith(source)
    for size in (3.0, 6.0):
        coarse = MetaTensor(torch.ones(1, 8, 8, 8), affine=torch.diag(torch.tensor([1.0, size, 1.0, 1.0], dtype=torch.float64)), meta={"filename_or_obj": source})
        with pytest.raises(InvalidInputError, match=f"{size:g}x the target spacing 1 mm; this network was trained for factors \\[2, 4\\]"):
            grid({"image": coarse})
    fine = MetaTensor(torch.ones(1, 8, 8, 8), affine=torch.diag(torch.tensor([1.0, 4.0, 2.0, 1.0], dtype=torch.float64)))
    assert grid({"image": fine})["image"].shape == (1, 8, 32, 16)


def test_a_datalist_of_degradations_drives_simulation():
    """degradation_list + SimulateLowResd(from_data=True): each entry's own degradation, factor
    and slice axis, deterministic (so a CacheDataset computes each pair once)."""
    from mribundles.transforms import degradation_list

    entries = degradation_list(["a.nii.gz"], ["kspace", "slices"], [2, 4], [0, 2])
    assert len(entries) == 8 and entries[0] == {"image": "a.nii.gz", "degradation": "kspace", "factor": 2, "slice_axis": 0}
    volume = MetaTensor(_randn(1, 16, 16, 16, seed=12).float(), affine=torch.as_tensor(LIA))
    simulate = SimulateLowResd("image", from_data=True, target_key="label")
    shapes = {}
    for entry in entries:
        d = simulate({**entry, "image": volume})
        shapes[(entry["degradation"], entry["factor"], entry["slice_axis"])] = tuple(d["image"].shape[1:])
        assert d["label"].shape == (1, 16, 16, 16)
        again = simulate({**entry, "image": volume})
        assert torch.equal(again["image"].as_tensor(), d["image"].as_tensor())
    assert shapes[("kspace", 4, 0)] == (16, 4, 4) and shapes[("kspace", 2, 2)] == (8, 8, 16)
    assert shapes[("slices", 4, 0)] == (4, 16, 16) and shapes[("slices", 2, 2)] == (16, 16, 8)


def test_intensity_scale_round_trip_and_empty_volume_refused():
    image = MetaTensor(torch.arange(1000, dtype=torch.float32).reshape(1, 10, 10, 10), meta={"filename_or_obj": "v.nii.gz"})
    d = ScaleIntensityByPercentiled(["image", "label"], ref_key="image")({"image": image, "label": image.clone()})
    assert float(d["image"].meta["intensity_scale"]) == pytest.approx(989.01, abs=0.01)
    torch.testing.assert_close(d["label"].as_tensor(), d["image"].as_tensor())
    torch.testing.assert_close(RestoreIntensityd("image")(d)["image"].as_tensor(), image.as_tensor())
    with pytest.raises(InvalidInputError, match="v.nii.gz: image is empty"):
        ScaleIntensityByPercentiled("image")({"image": MetaTensor(torch.zeros(1, 8, 8, 8), meta={"filename_or_obj": "v.nii.gz"})})


# ------------------------------------------------------------------------- network, metrics


def test_untrained_network_returns_its_input_for_any_size():
    torch.manual_seed(0)
    network = ResidualUNet3d(channels=(4, 8, 16, 32), head_channels=2).eval()
    x = _randn(1, 1, 21, 18, 13, seed=9).float()
    with torch.no_grad():
        assert torch.equal(network(x), x)
        network.head.weight.fill_(0.1)
        y = network(x)
    assert y.shape == x.shape and not torch.equal(y, x)


def test_volume_metric_is_fastmri_psnr_over_the_volume():
    target, pred = _randn(1, 9, 10, 11, seed=10).abs(), _randn(1, 9, 10, 11, seed=11).abs()
    assert volume_metric("psnr", target, pred) == pytest.approx(psnr(target[0].permute(2, 0, 1), pred[0].permute(2, 0, 1)))
    assert volume_metric("psnr", target, pred) == pytest.approx(psnr(target[0], pred[0]))  # PSNR ignores how it is sliced
