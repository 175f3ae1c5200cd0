"""Tests for mribundles.io: round trips for every format, and every kind of bad input."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import h5py
import numpy as np
import pytest
import torch

from helpers import bad_input, random_kspace
from mribundles.io import (
    atomic_path,
    load_kspace,
    minimal_ismrmrd_header,
    read_cfl,
    read_fastmri,
    read_image,
    save_kspace,
    write_cfl,
    write_fastmri,
    write_image,
)


# --- atomic writes ---------------------------------------------------------------------------


def test_atomic_path_keeps_suffixes_and_replaces(tmp_path):
    target = tmp_path / "sub" / "out.nii.gz"
    with atomic_path(target) as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent.parent == target.parent
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert os.listdir(target.parent) == ["out.nii.gz"]


def test_atomic_path_leaves_nothing_when_body_raises(tmp_path):
    target = tmp_path / "out.npy"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == []
    # An existing file is left as it was.
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.npy"]


# --- k-space round trips ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["k.npy", "k.cfl", "k.h5"])
@pytest.mark.parametrize("shape", [(4, 6, 8), (3, 4, 6, 8)])
def test_kspace_round_trip(tmp_path, name, shape):
    k = random_kspace(*shape)
    save_kspace(tmp_path / name, torch.from_numpy(k))
    back = load_kspace(tmp_path / name)
    assert back.dtype == torch.complex64 and tuple(back.shape) == shape
    np.testing.assert_array_equal(back.numpy(), k)


def test_cfl_layout_matches_bart(tmp_path):
    # (coil, ky, kx) is stored as BART (kx, ky, 1, coil): readout first, coils on axis 3.
    k = random_kspace(2, 3, 5)
    save_kspace(tmp_path / "k", k)  # bare name = BART
    hdr = (tmp_path / "k.hdr").read_text().splitlines()
    assert hdr[0] == "# Dimensions" and hdr[1].split()[:4] == ["5", "3", "1", "2"]
    raw = read_cfl(tmp_path / "k.cfl")
    assert raw.shape == (5, 3, 1, 2)
    assert raw[4, 1, 0, 1] == k[1, 1, 4]
    # The pair can be named by either file or by the bare name.
    for name in ("k", "k.cfl", "k.hdr"):
        np.testing.assert_array_equal(load_kspace(tmp_path / name).numpy(), k)


def test_write_cfl_read_cfl_fortran_order(tmp_path):
    a = random_kspace(2, 3, 4)
    write_cfl(tmp_path / "a", a)
    assert (tmp_path / "a.cfl").stat().st_size == a.size * 8
    np.testing.assert_array_equal(np.fromfile(tmp_path / "a.cfl", np.complex64), a.ravel("F"))
    np.testing.assert_array_equal(read_cfl(tmp_path / "a"), a)


def test_load_kspace_h5_key_and_complex128(tmp_path):
    k = random_kspace(2, 4, 4).astype(np.complex128)
    with h5py.File(tmp_path / "x.h5", "w") as hf:
        hf["other"] = k
    back = load_kspace(tmp_path / "x.h5", key="other")
    assert back.dtype == torch.complex64
    np.testing.assert_allclose(back.numpy(), k, rtol=1e-6)


# --- fastMRI HDF5 ----------------------------------------------------------------------------


def test_fastmri_round_trip_with_everything(tmp_path):
    k = random_kspace(2, 3, 8, 10)
    rss = np.random.default_rng(1).random((2, 8, 8)).astype(np.float32)
    mask = np.zeros(10, bool)
    mask[[0, 4, 5, 6]] = True
    header = minimal_ismrmrd_header((10, 8), (220.0, 200.0))
    attrs = {"max": 1.5, "norm": 2.0, "acquisition": "AXT1", "patient_id": "p0",
             "kspace_origin": "simulated from real images"}
    path = tmp_path / "vol.h5"
    write_fastmri(path, torch.from_numpy(k), rss, torch.from_numpy(mask), header, attrs)

    with h5py.File(path, "r") as hf:  # stored like fastMRI's files
        assert hf["kspace"].dtype == np.complex64 and hf["reconstruction_rss"].dtype == np.float32
    vol = read_fastmri(path)
    np.testing.assert_array_equal(vol.kspace.numpy(), k)
    np.testing.assert_array_equal(vol.reconstruction_rss.numpy(), rss)
    assert vol.mask.dtype == torch.bool and vol.mask.shape == (10,)
    np.testing.assert_array_equal(vol.mask.numpy(), mask)
    assert vol.ismrmrd_header == header
    assert vol.attrs == attrs


def test_fastmri_optional_parts_absent_and_single_coil(tmp_path):
    k = random_kspace(2, 4, 6)  # fastMRI single-coil layout (slice, ky, kx)
    with h5py.File(tmp_path / "sc.h5", "w") as hf:
        hf["kspace"] = k
    vol = read_fastmri(tmp_path / "sc.h5")
    assert vol.kspace.shape == (2, 1, 4, 6)
    assert vol.reconstruction_rss is None and vol.mask is None and vol.ismrmrd_header is None
    assert vol.attrs == {}


def test_minimal_ismrmrd_header_as_fastmri_reads_it():
    root = ET.fromstring(minimal_ismrmrd_header((640, 372), (440.0, 220.0, 3.0), (320, 320)))
    ns = {"i": "http://www.ismrm.org/ISMRMRD"}

    def q(p):
        return root.find("i:" + "/i:".join(p.split("/")), ns).text

    assert [q(f"encoding/encodedSpace/matrixSize/{a}") for a in "xyz"] == ["640", "372", "1"]
    assert [q(f"encoding/reconSpace/matrixSize/{a}") for a in "xyz"] == ["320", "320", "1"]
    assert q("encoding/encodedSpace/fieldOfView_mm/z") == "3.0"
    assert q("encoding/encodingLimits/kspace_encoding_step_1/center") == "186"
    assert int(q("encoding/encodingLimits/kspace_encoding_step_1/maximum")) + 1 == 372


# --- bad k-space input -----------------------------------------------------------------------


def test_missing_file(tmp_path):
    for name in ("nope.npy", "nope.h5", "nope.cfl"):
        with bad_input(name, "not found"):
            load_kspace(tmp_path / name)
    with bad_input("nope.nii.gz", "not found"):
        read_image(tmp_path / "nope.nii.gz")


def test_truncated_npy(tmp_path):
    path = tmp_path / "cut.npy"
    np.save(path, random_kspace(4, 8, 8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with bad_input(path, "truncated"):
        load_kspace(path)


def test_corrupt_h5(tmp_path):
    path = tmp_path / "junk.h5"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with bad_input(path, "corrupt"):
        load_kspace(path)
    with bad_input(path, "corrupt"):
        read_fastmri(path)


def test_h5_without_kspace(tmp_path):
    path = tmp_path / "nokspace.h5"
    with h5py.File(path, "w") as hf:
        hf["reconstruction_rss"] = np.zeros((1, 4, 4), np.float32)
    with bad_input(path, "missing dataset 'kspace'"):
        read_fastmri(path)
    with bad_input(path, "missing dataset 'kspace'"):
        load_kspace(path)


@pytest.mark.parametrize(
    "array, word",
    [
        (np.ones((4, 8, 8), np.float32), "real-valued"),
        (np.ones((8, 8), np.complex64), "dimensions"),
        (np.zeros((0, 8, 8), np.complex64), "empty"),
    ],
    ids=["real", "2d", "empty"],
)
def test_bad_kspace_arrays(tmp_path, array, word):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with bad_input(path, word):
        load_kspace(path)


def test_nan_kspace(tmp_path):
    k = random_kspace(2, 4, 4)
    k[1, 2, 3] = np.nan
    np.save(tmp_path / "nan.npy", k)
    with bad_input("nan.npy", "nan"):
        load_kspace(tmp_path / "nan.npy")
    with h5py.File(tmp_path / "nan.h5", "w") as hf:
        hf["kspace"] = k[None]
    with bad_input("nan.h5", "nan"):
        read_fastmri(tmp_path / "nan.h5")
    with bad_input("out.npy", "nan"):  # writers refuse it too, and write nothing
        save_kspace(tmp_path / "out.npy", k)
    assert not (tmp_path / "out.npy").exists()


def test_mask_length_mismatch(tmp_path):
    path = tmp_path / "mask.h5"
    with h5py.File(path, "w") as hf:
        hf["kspace"] = random_kspace(1, 2, 4, 10)
        hf["mask"] = np.ones(9, bool)
    with bad_input(path, "mask length"):
        read_fastmri(path)
    with bad_input("w.h5", "mask length"):
        write_fastmri(tmp_path / "w.h5", random_kspace(1, 2, 4, 10), mask=np.ones(9, bool))
    assert not (tmp_path / "w.h5").exists()


def test_truncated_cfl(tmp_path):
    write_cfl(tmp_path / "t", random_kspace(4, 4, 1, 2))
    cfl = tmp_path / "t.cfl"
    cfl.write_bytes(cfl.read_bytes()[:-8])
    with bad_input(cfl, "truncated"):
        load_kspace(tmp_path / "t")
    (tmp_path / "t.hdr").unlink()
    with bad_input("t.hdr", "not found"):
        read_cfl(cfl)


def test_reading_leaves_input_unchanged(tmp_path):
    paths = [tmp_path / "k.npy", tmp_path / "k.h5", tmp_path / "k.cfl", tmp_path / "k.hdr"]
    save_kspace(paths[0], random_kspace(1, 2, 4, 4))
    write_fastmri(paths[1], random_kspace(1, 2, 4, 4), mask=np.ones(4, bool), attrs={"max": 1.0})
    save_kspace(paths[2], random_kspace(2, 4, 4))
    write_image(tmp_path / "i.nii.gz", np.ones((3, 3, 3), np.float32), np.eye(4))
    paths.append(tmp_path / "i.nii.gz")
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in paths}
    load_kspace(paths[0])
    read_fastmri(paths[1])
    load_kspace(paths[1])
    load_kspace(paths[2])
    read_image(paths[4])
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in paths} == before


# --- images ----------------------------------------------------------------------------------


def _oblique_affine() -> np.ndarray:
    c, s = np.cos(0.3), np.sin(0.3)
    rotation = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.9, 1.1, 2.5])
    affine[:3, 3] = [-10.0, 20.0, 5.5]
    return affine


def test_nifti_round_trip(tmp_path):
    image = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    affine = _oblique_affine()
    write_image(tmp_path / "img.nii.gz", torch.from_numpy(image), affine)
    back, back_affine = read_image(tmp_path / "img.nii.gz")
    assert back.dtype == torch.float32 and back.shape == (5, 6, 7)
    np.testing.assert_array_equal(back.numpy(), image)
    assert back_affine.dtype == np.float64
    np.testing.assert_allclose(back_affine, affine, atol=1e-5)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_itk_round_trip_agrees_with_nifti(tmp_path, suffix):
    image = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    affine = _oblique_affine()
    write_image(tmp_path / f"img{suffix}", image, affine)
    back, back_affine = read_image(tmp_path / f"img{suffix}")
    np.testing.assert_array_equal(back.numpy(), image)
    np.testing.assert_allclose(back_affine, affine, atol=1e-6)
    # The same file geometry read by ITK from a NIfTI gives the nibabel affine.
    write_image(tmp_path / "img.nii", image, affine)
    from mribundles.io.images import _read_itk

    itk_array, itk_affine = _read_itk(tmp_path / "img.nii")
    np.testing.assert_array_equal(itk_array, image)
    np.testing.assert_allclose(itk_affine, read_image(tmp_path / "img.nii")[1], atol=1e-5)


def test_bad_images(tmp_path):
    corrupt = tmp_path / "junk.nii.gz"
    corrupt.write_bytes(b"not a nifti at all")
    with bad_input(corrupt, "corrupt"):
        read_image(corrupt)
    corrupt_nrrd = tmp_path / "junk.nrrd"
    corrupt_nrrd.write_bytes(b"NRRD0004\ngarbage\n")
    with bad_input(corrupt_nrrd, "corrupt"):
        read_image(corrupt_nrrd)
    image = np.ones((3, 3, 3), np.float32)
    image[1, 1, 1] = np.nan
    import nibabel as nib

    nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / "nan.nii")
    with bad_input("nan.nii", "nan"):
        read_image(tmp_path / "nan.nii")
    with bad_input("out.mha", "nan"):
        write_image(tmp_path / "out.mha", image, np.eye(4))
    assert not (tmp_path / "out.mha").exists()


def test_atomic_nibabel_writer_with_saveimage(tmp_path):
    from monai.data import MetaTensor
    from monai.transforms import SaveImage

    from mribundles.io import AtomicNibabelWriter

    affine = torch.from_numpy(_oblique_affine())
    image = MetaTensor(torch.rand(1, 4, 5, 6), affine=affine, meta={"filename_or_obj": "case"})
    saver = SaveImage(output_dir=tmp_path, output_postfix="seg", separate_folder=False,
                      writer=AtomicNibabelWriter, resample=False, print_log=False)
    saver(image)
    assert os.listdir(tmp_path) == ["case_seg.nii.gz"]
    back, back_affine = read_image(tmp_path / "case_seg.nii.gz")
    np.testing.assert_allclose(back.numpy(), image[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(back_affine, affine.numpy(), atol=1e-5)


def test_dicom_file_and_series_folder(tmp_path):
    import itk

    voxels = np.arange(4 * 5 * 6, dtype=np.uint16).reshape(6, 5, 4)  # ITK order (z, y, x)
    img = itk.image_from_array(voxels)
    img.SetSpacing([0.5, 0.7, 2.0])
    img.SetOrigin([1.0, 2.0, 3.0])  # LPS
    itk.imwrite(img, str(tmp_path / "x.dcm"))
    expected = np.diag([-0.5, -0.7, 2.0, 1.0])
    expected[:3, 3] = [-1.0, -2.0, 3.0]  # RAS
    for path in (tmp_path / "x.dcm", tmp_path):
        array, affine = read_image(path)
        assert array.shape == (4, 5, 6)
        np.testing.assert_array_equal(array.numpy(), voxels.T)
        np.testing.assert_allclose(affine, expected, atol=1e-5)
