"""K-space dictionary transforms and dataset listings, on the shipped real data and tiny files."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import mribundles
from mribundles.data import kspace_slices
from mribundles.errors import InvalidInputError
from mribundles.io import save_kspace, write_fastmri
from mribundles.physics import ifft2c, make_mask, rss
from mribundles.transforms import (
    CropKspaced,
    LoadKspaced,
    NormalizeKspaced,
    ReferenceImaged,
    UndersampleKspaced,
    ZeroFilld,
)

SIGPY_BRAIN = "sigpy_brain_8ch_poisson_R8.npy"


def _crandn(*shape: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.complex64)


def _snapshot(d: dict) -> dict:
    return {k: (v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)) for k, v in d.items()}


def _assert_unchanged(before: dict, after: dict) -> None:
    """The transform's input dict: same keys, same objects' values."""
    assert before.keys() == after.keys()
    for key, value in before.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(after[key], value), key
        else:
            assert after[key] == value, key


@pytest.fixture(scope="module")
def volume_h5(tmp_path_factory) -> tuple[str, np.ndarray]:
    """A fastMRI-layout file with 3 slices of 4-coil (24, 20) k-space."""
    kspace = _crandn(3, 4, 24, 20, seed=9).numpy()
    path = tmp_path_factory.mktemp("h5") / "vol.h5"
    write_fastmri(path, kspace)
    return str(path), kspace


# ------------------------------------------------------------------------------------ loading


def test_load_shipped_npy():
    path = mribundles.sample_data.path(SIGPY_BRAIN)
    data = {"kspace": path}
    out = LoadKspaced("kspace")(data)
    assert data == {"kspace": path}
    kspace = out["kspace"]
    assert kspace.dtype == torch.complex64 and kspace.shape == (8, 230, 180)
    np.testing.assert_array_equal(kspace.numpy(), np.load(path))
    assert out["kspace_meta_dict"] == {"filename_or_obj": path, "slice": -1}


def test_load_h5_slice(volume_h5):
    path, kspace = volume_h5
    data = {"kspace": path, "slice": 2}
    out = LoadKspaced("kspace")(data)
    assert data == {"kspace": path, "slice": 2}
    assert out["kspace"].shape == (4, 24, 20) and out["kspace"].dtype == torch.complex64
    np.testing.assert_array_equal(out["kspace"].numpy(), kspace[2])
    assert out["kspace_meta_dict"] == {"filename_or_obj": path, "slice": 2}


def test_load_h5_without_slice_raises(volume_h5):
    path, _ = volume_h5
    with pytest.raises(InvalidInputError, match="needs a slice index"):
        LoadKspaced("kspace")({"kspace": path})


# ------------------------------------------------------------------------------- undersampling


@pytest.fixture()
def sample() -> dict:
    return {"kspace": _crandn(4, 32, 40, seed=1)}


def test_undersample_none_keeps_data(sample):
    kspace = sample["kspace"].clone()
    kspace[:, :, ::3] = 0  # prospectively undersampled: zeros where not acquired
    data = {"kspace": kspace}
    before = _snapshot(data)
    out = UndersampleKspaced("kspace", kind="none")(data)
    _assert_unchanged(before, data)
    assert torch.equal(out["kspace"], kspace)
    expected = torch.ones(32, 40, dtype=torch.bool)
    expected[:, ::3] = False
    assert out["mask"].dtype == torch.bool and torch.equal(out["mask"], expected)


def test_undersample_random1d_fixed_seed(sample):
    before = _snapshot(sample)
    t = UndersampleKspaced("kspace", kind="random1d", acceleration=4, center_fraction=0.1, seed=7)
    first, second = t(sample), t(sample)
    _assert_unchanged(before, sample)
    expected = make_mask("random1d", (32, 40), 4, 0.1, 7)
    assert torch.equal(first["mask"], expected) and torch.equal(second["mask"], expected)
    assert torch.equal(first["kspace"], second["kspace"])
    assert (first["kspace"][:, ~expected] == 0).all()
    assert torch.equal(first["kspace"][:, expected], sample["kspace"][:, expected])
    # A fresh transform with the same seed gives the same mask: nothing global.
    assert torch.equal(UndersampleKspaced("kspace", kind="random1d", acceleration=4, center_fraction=0.1, seed=7)(sample)["mask"], expected)


def test_undersample_seed_none_draws_new_masks(sample):
    def masks(state: int, n: int = 4) -> list[torch.Tensor]:
        t = UndersampleKspaced("kspace", kind="random1d", acceleration=4, center_fraction=0.1, seed=None)
        t.set_random_state(seed=state)
        return [t(sample)["mask"] for _ in range(n)]

    a, b = masks(0), masks(0)
    assert all(torch.equal(x, y) for x, y in zip(a, b)), "same random state, same sequence"
    assert any(not torch.equal(a[0], m) for m in a[1:]), "a new mask per call"


@pytest.mark.parametrize("kind", ["poisson2d", "gaussian2d", "equispaced1d"])
def test_undersample_other_kinds(sample, kind):
    out = UndersampleKspaced("kspace", kind=kind, acceleration=3, center_fraction=0.15, seed=1)(sample)
    expected = make_mask(kind, (32, 40), 3, 0.15, 1)
    assert torch.equal(out["mask"], expected)
    assert torch.equal(out["kspace"], sample["kspace"] * expected)


def test_undersample_unknown_kind_raises():
    with pytest.raises(InvalidInputError, match="unknown mask kind 'radial'"):
        UndersampleKspaced("kspace", kind="radial")


# ------------------------------------------------------------------------- images and scaling


def test_zero_fill_and_reference(sample):
    before = _snapshot(sample)
    zf = ZeroFilld("kspace")(sample)
    ref = ReferenceImaged("kspace")(sample)
    _assert_unchanged(before, sample)
    expected = rss(ifft2c(sample["kspace"])).unsqueeze(0)
    assert zf["zero_filled"].shape == (1, 32, 40) and zf["zero_filled"].dtype == torch.float32
    torch.testing.assert_close(zf["zero_filled"], expected, rtol=0, atol=0)
    torch.testing.assert_close(ref["target"], expected, rtol=0, atol=0)


def test_normalize(sample):
    data = ReferenceImaged("kspace")(ZeroFilld("kspace")(sample))
    data["kspace"] = data["kspace"] * 1e4
    data["zero_filled"] = data["zero_filled"] * 1e4
    data["target"] = data["target"] * 1e4
    before = _snapshot(data)
    out = NormalizeKspaced(["kspace", "target"])(data)
    _assert_unchanged(before, data)
    scale = before["zero_filled"].max()
    torch.testing.assert_close(out["scale"], scale, rtol=0, atol=0)
    assert out["zero_filled"].max().item() == pytest.approx(1.0, rel=1e-6)
    torch.testing.assert_close(out["kspace"], before["kspace"] / scale)
    torch.testing.assert_close(out["target"], before["target"] / scale)
    # The scaled k-space still zero-fills to the scaled reference.
    torch.testing.assert_close(rss(ifft2c(out["kspace"])).unsqueeze(0), out["zero_filled"], rtol=1e-5, atol=1e-6)


def test_normalize_reference_in_keys_is_scaled_once(sample):
    data = ZeroFilld("kspace")(sample)
    out = NormalizeKspaced(["kspace", "zero_filled"])(data)
    assert out["zero_filled"].max().item() == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("shape,roi", [((32, 40), (16, 24)), ((23, 30), (16, 20))])
def test_crop(shape, roi):
    kspace = _crandn(3, *shape, seed=2)
    data = {"kspace": kspace}
    before = _snapshot(data)
    out = CropKspaced("kspace", roi)(data)
    _assert_unchanged(before, data)
    cropped = out["kspace"]
    assert cropped.shape == (3, *roi) and cropped.dtype == torch.complex64
    assert type(cropped) is torch.Tensor  # plain tensor, not MONAI's MetaTensor
    # The image of the cropped k-space is the centre of the original image (MONAI's centre:
    # start = H//2 - roi//2).
    sy, sx = shape[0] // 2 - roi[0] // 2, shape[1] // 2 - roi[1] // 2
    centre = ifft2c(kspace)[:, sy : sy + roi[0], sx : sx + roi[1]]
    torch.testing.assert_close(ifft2c(cropped), centre, rtol=0, atol=1e-6)


def test_pipeline_on_shipped_data_does_not_mutate_input():
    data = {"kspace": mribundles.sample_data.path(SIGPY_BRAIN)}
    before = dict(data)
    out = LoadKspaced("kspace")(data)
    out = UndersampleKspaced("kspace", kind="none")(out)
    out = ZeroFilld("kspace")(out)
    out = NormalizeKspaced(["kspace"])(out)
    assert data == before
    assert out["mask"].shape == (230, 180)
    # The shipped file is Poisson R8: about 1/8 of k-space holds samples.
    assert out["mask"].float().mean().item() == pytest.approx(1 / 8, abs=0.01)
    assert out["zero_filled"].max().item() == pytest.approx(1.0, rel=1e-6)


# -------------------------------------------------------------------------------- dataset list


def test_kspace_slices(tmp_path, volume_h5):
    h5_path, _ = volume_h5
    assert kspace_slices(h5_path) == [{"kspace": h5_path, "slice": i} for i in range(3)]
    single = tmp_path / "b_single.npy"
    save_kspace(single, _crandn(2, 8, 6).numpy())
    assert kspace_slices(single) == [{"kspace": str(single)}]
    assert kspace_slices([str(single)], key="ksp") == [{"ksp": str(single)}]
    multi = tmp_path / "a_multi.npy"
    save_kspace(multi, _crandn(2, 2, 8, 6).numpy())
    (tmp_path / "notes.txt").write_text("not k-space")
    listing = kspace_slices(tmp_path)
    assert listing == [
        {"kspace": str(multi), "slice": 0},
        {"kspace": str(multi), "slice": 1},
        {"kspace": str(single)},
    ]
