"""The catalogue of bad input a careless user or an attacker would try, at the library level.

Every case must raise `mribundles.errors.InvalidInputError` whose message is one line naming
the file and the problem, leave every file under ``tmp_path`` byte for byte as it was (sha256)
and write nothing new (no half-written output, no temporary folder left behind).

Cases already covered elsewhere belong to the catalogue but are not repeated here:

- tests/test_io.py: missing .npy/.h5/.cfl and .nii.gz (``test_missing_file``); .npy cut short by
  100 bytes (``test_truncated_npy``); random bytes as fastMRI .h5 (``test_corrupt_h5``); .h5
  without ``kspace`` (``test_h5_without_kspace``); real, 2D and zero-coil .npy k-space
  (``test_bad_kspace_arrays``); NaN k-space in .npy and fastMRI .h5, and ``save_kspace``
  refusing it (``test_nan_kspace``); mask length mismatch (``test_mask_length_mismatch``);
  .cfl cut short and .hdr missing (``test_truncated_cfl``); reading leaves input unchanged
  (``test_reading_leaves_input_unchanged``); corrupt .nii.gz and .nrrd, NaN voxels, ``write_image``
  refusing NaN (``test_bad_images``).
- tests/test_raw_readers.py: twix cut in half, cut in its header, text as .dat, empty .dat,
  missing .dat through ``read_twix`` (``test_bad_twix_files``); a corrupt twix block header
  (``test_corrupt_twix_block_header_is_refused``); ISMRMRD cut short by 4000 bytes, noise only,
  malformed XML, short readout, no data, data not acquisitions, radial, bad mask on writing
  (``test_bad_ismrmrd_files``).
- tests/test_synth.py: 2D, empty, unknown-label and non-integer label maps
  (``test_bad_label_maps_are_refused_naming_the_file``), label grid mismatch
  (``test_label_map_must_match_its_image_grid``).
- tests/test_errors.py: the one-line report of a refusal and an output folder that is a file,
  through a whole bundle run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch

from helpers import file_tree, random_kspace
from mribundles.errors import InvalidInputError
from mribundles.io import (
    kspace_shape,
    load_kspace,
    read_image,
    save_kspace,
    write_fastmri,
    write_image,
    write_ismrmrd,
)
from mribundles.physics import fft2c, ifft2c
from mribundles.synth import load_label_map
from mribundles.transforms import LoadVolumed


def _assert_refused(call: Callable[[], object], root: Path, named: Path, *words: str) -> str:
    """``call()`` raises InvalidInputError: one line, naming ``named`` and one of ``words``; the
    files under ``root`` are unchanged and nothing was added. Returns the message."""
    before = file_tree(root)
    with pytest.raises(InvalidInputError) as raised:
        call()
    message = str(raised.value)
    assert "\n" not in message, message
    assert named.name in message, message
    assert any(w.lower() in message.lower() for w in words), message
    assert file_tree(root) == before
    return message


# --- broken k-space files: every format x missing / empty / truncated / corrupt / folder ------------

_RNG_BYTES = np.random.default_rng(7).bytes(4096)


def _npy(path: Path) -> None:
    np.save(path, random_kspace(2, 3, 8, 6))


def _fastmri(path: Path) -> None:
    write_fastmri(path, random_kspace(2, 3, 8, 6))


def _ismrmrd(path: Path) -> None:
    write_ismrmrd(path, random_kspace(2, 3, 8, 6))


def _bart(path: Path) -> None:
    """BART (kx, ky, 1, coil, 1, ..., slice) = (6, 8, 1, 3, ..., 2): its header's last size is 2."""
    save_kspace(path.with_suffix(".cfl"), random_kspace(2, 3, 8, 6))


def _half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _make(name: str, writer: Callable[[Path], None] | None, damage: Callable[[Path], None] | None):
    """A builder: write a valid file with ``writer`` (if any), then damage ``name`` in place."""

    def build(root: Path) -> Path:
        path = root / name
        if writer is not None:
            writer(path)
        if damage is not None:
            damage(root / name)
        return path

    return build


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _random(path: Path) -> None:
    path.write_bytes(_RNG_BYTES)


def _folder(path: Path) -> None:
    path.mkdir()


def _bart_random_data(path: Path) -> None:
    """Random bytes of exactly the size the header asks for: only the values betray them."""
    size = path.stat().st_size
    path.write_bytes(np.random.default_rng(3).bytes(size))


# (id, builder, the file the message names, words, readers). Missing .npy/.h5/.cfl, random .h5,
# and empty/halved twix are in tests/test_io.py and tests/test_raw_readers.py (module docstring).
_BOTH = (load_kspace, kspace_shape)
BROKEN_FILES = [
    ("npy-empty", _make("k.npy", None, _empty), "k.npy", ["truncated or corrupt"], _BOTH),
    ("npy-truncated-to-half", _make("k.npy", _npy, _half), "k.npy", ["truncated or corrupt"], _BOTH),
    ("npy-random-bytes", _make("k.npy", None, _random), "k.npy", ["truncated or corrupt"], _BOTH),
    ("npy-is-a-folder", _make("k.npy", None, _folder), "k.npy", ["not a regular file"], _BOTH),
    ("fastmri-h5-empty", _make("k.h5", None, _empty), "k.h5", ["not a readable hdf5"], _BOTH),
    ("fastmri-h5-truncated-to-half", _make("k.h5", _fastmri, _half), "k.h5", ["truncated or corrupt"], _BOTH),
    ("fastmri-h5-is-a-folder", _make("k.h5", None, _folder), "k.h5", ["not a regular file"], _BOTH),
    ("hdf5-suffix-missing", _make("k.hdf5", None, None), "k.hdf5", ["not found"], _BOTH),
    ("ismrmrd-missing", _make("raw.h5", None, None), "raw.h5", ["not found"], _BOTH),
    ("ismrmrd-empty", _make("raw.h5", _ismrmrd, _empty), "raw.h5", ["not a readable hdf5"], _BOTH),
    ("ismrmrd-truncated-to-half", _make("raw.h5", _ismrmrd, _half), "raw.h5", ["truncated or corrupt"], _BOTH),
    ("ismrmrd-random-bytes", _make("raw.h5", _ismrmrd, _random), "raw.h5", ["truncated or corrupt"], _BOTH),
    ("bart-cfl-empty", _make("k.cfl", _bart, _empty), "k.cfl", ["truncated: holds 0 bytes"], _BOTH),
    ("bart-cfl-truncated-to-half", _make("k.cfl", _bart, _half), "k.cfl", ["truncated: holds 1152 bytes"], _BOTH),
    ("bart-cfl-random-values", _make("k.cfl", _bart, _bart_random_data), "k.cfl", ["nan or inf", "would overflow"], (load_kspace,)),
    ("bart-hdr-empty", _make("k.hdr", _bart, _empty), "k.hdr", ["malformed bart header"], _BOTH),
    ("bart-hdr-random-bytes", _make("k.hdr", _bart, _random), "k.hdr", ["malformed bart header"], _BOTH),
    ("bart-hdr-truncated-to-half", _make("k.hdr", _bart, _half), "k.cfl", ["too large"], _BOTH),
    ("bart-cfl-is-a-folder", _make("k.cfl", None, _folder), "k.cfl", ["not a regular file"], _BOTH),
    ("bart-hdr-is-a-folder", _make("k.hdr", None, _folder), "k.cfl", ["not found"], _BOTH),
    ("twix-missing", _make("meas.dat", None, None), "meas.dat", ["not found"], _BOTH),
    ("twix-random-bytes", _make("meas.dat", None, _random), "meas.dat", ["not a twix file"], _BOTH),
    ("twix-is-a-folder", _make("meas.dat", None, _folder), "meas.dat", ["not a regular file"], _BOTH),
    ("unknown-suffix", _make("k.mat", None, _random), "k.mat", ["unsupported k-space format '.mat'"], _BOTH),
]


@pytest.mark.parametrize("build, named, words, readers", [c[1:] for c in BROKEN_FILES],
                         ids=[c[0] for c in BROKEN_FILES])
def test_broken_kspace_file_is_refused(tmp_path, build, named, words, readers):
    path = build(tmp_path)
    for reader in readers:
        _assert_refused(lambda: reader(path), tmp_path, tmp_path / named, *words)


# --- k-space content: the file reads, what it holds is unusable -------------------------------------

_INF = random_kspace(2, 8, 8)
_INF[1, 2, 3] = np.inf + 0j
_NAN_4D = random_kspace(1, 2, 8, 8)
_NAN_4D[0, 1, 4, 4] = np.nan
# 1e38 is a finite complex64, but an 8 x 8 Fourier transform sums 64 of them: Inf, then NaN.
_HUGE = np.full((2, 8, 8), 1e38 + 1e38j, np.complex64)

# (id, array, words). Real, 2D and zero-coil 3D .npy and NaN .npy/fastMRI are in tests/test_io.py.
BAD_CONTENT = [
    ("1d", random_kspace(16), ["has 1 dimensions"]),
    ("2d", random_kspace(8, 8), ["has 2 dimensions"]),
    ("5d", random_kspace(1, 1, 2, 4, 4), ["has 5 dimensions"]),
    ("zero-coils-4d", np.zeros((1, 0, 8, 8), np.complex64), ["empty"]),
    ("zero-slices-4d", np.zeros((0, 2, 8, 8), np.complex64), ["empty"]),
    ("real-float64", np.ones((1, 2, 4, 4)), ["real-valued (dtype float64)"]),
    ("integer", np.ones((2, 4, 4), np.int16), ["real-valued (dtype int16)"]),
    ("inf", _INF, ["nan or inf"]),
    ("nan-4d", _NAN_4D, ["nan or inf"]),
    ("1e38-overflows-the-fft", _HUGE, ["would overflow complex64"]),
]
# BART files hold complex64 (coil, ky, kx) here; the other shapes and dtypes only in .npy/.h5.
CONTENT_CASES = [
    pytest.param(array, words, suffix, id=f"{case}-{suffix[1:]}")
    for case, array, words in BAD_CONTENT
    for suffix in (".npy", ".h5", ".cfl")
    if suffix != ".cfl" or (array.ndim == 3 and np.iscomplexobj(array) and array.size > 0)
]


def _store_raw(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as it is, bypassing our writers (which refuse it)."""
    if path.suffix == ".npy":
        np.save(path, array)
    elif path.suffix == ".h5":
        with h5py.File(path, "w") as hf:
            hf["kspace"] = array
    else:  # BART: (coil, ky, kx) stored as (kx, ky, 1, coil), other ranks as they are
        data = array.transpose(2, 1, 0)[:, :, None, :] if array.ndim == 3 else array
        dims = list(data.shape) + [1] * (16 - data.ndim)
        np.asarray(data, np.complex64).ravel(order="F").tofile(path)
        path.with_suffix(".hdr").write_text("# Dimensions\n" + " ".join(map(str, dims)) + "\n")


@pytest.mark.parametrize("array, words, suffix", CONTENT_CASES)
def test_unusable_kspace_content_is_refused(tmp_path, array, words, suffix):
    path = tmp_path / f"k{suffix}"
    _store_raw(path, array)
    _assert_refused(lambda: load_kspace(path), tmp_path, path, *words)


def test_writers_refuse_overflowing_kspace_and_write_nothing(tmp_path):
    for name in ("z.npy", "z.h5", "z.cfl"):
        _assert_refused(lambda: save_kspace(tmp_path / name, _HUGE), tmp_path, tmp_path / name, "overflow")
    assert list(tmp_path.iterdir()) == []


def test_an_all_zero_slice_is_accepted(tmp_path):
    """A slice outside the head of a multi-slice file holds no signal and is no error: it loads as
    stored (the CS baseline and the evaluation refuse 'no signal' where they need one)."""
    kspace = np.stack([random_kspace(2, 8, 8), np.zeros((2, 8, 8), np.complex64)])
    path = tmp_path / "k.npy"
    np.save(path, kspace)
    assert torch.equal(load_kspace(path, slice_index=1), torch.zeros(2, 8, 8, dtype=torch.complex64))


def test_largest_accepted_kspace_transforms_without_overflow(tmp_path):
    """Just below the refusal bound, the Fourier transform of the worst case (every sample at the
    peak, all in phase) stays finite: the bound is not stricter than it must be by much."""
    limit = float(np.finfo(np.float32).max) / 64
    path = tmp_path / "big.npy"
    np.save(path, np.full((2, 8, 8), 0.7 * limit / np.sqrt(2) * (1 + 1j), np.complex64))
    image = ifft2c(load_kspace(path))
    assert torch.isfinite(image).all()
    # ortho FFT of a constant: all energy in the centre pixel, |centre| = sqrt(64) * 0.7 * limit
    assert float(image.abs().max()) == pytest.approx(8 * 0.7 * limit, rel=1e-5)


@pytest.mark.parametrize("shape", [(2, 7, 9), (1, 3, 5, 11)], ids=["odd-ky-kx", "odd-with-slices"])
def test_odd_matrix_sizes_are_accepted_and_round_trip(tmp_path, shape):
    """Odd matrices are not refused: they load as stored and the centred FFT inverts exactly."""
    kspace = random_kspace(*shape)
    for suffix in (".npy", ".h5"):
        path = tmp_path / f"odd{suffix}"
        expected = kspace if suffix == ".npy" or len(shape) == 4 else kspace[None]  # fastMRI is 4D
        if suffix == ".npy":
            np.save(path, expected)
        else:
            write_fastmri(path, expected)
        loaded = load_kspace(path)
        np.testing.assert_array_equal(loaded.numpy(), expected)
        assert kspace_shape(path) == expected.shape
        torch.testing.assert_close(fft2c(ifft2c(loaded)), loaded, rtol=1e-5, atol=1e-5)


# --- NIfTI volumes ---------------------------------------------------------------------------------


def _nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), path)
    return path


def _singular_affine(path: Path) -> Path:
    """A NIfTI whose sform is all zeros (nibabel will not build a qform from it: code 0)."""
    img = nib.Nifti1Image(np.ones((8, 8, 8), np.float32), None)
    img.set_sform(np.zeros((4, 4)), code=1)
    img.set_qform(None, code=0)
    nib.save(img, path)
    return path


def _inf_voxel(path: Path) -> Path:
    array = np.ones((8, 8, 8), np.float32)
    array[2, 3, 4] = np.inf
    return _nifti(path, array)


def _halved(path: Path) -> Path:
    _nifti(path, np.ones((8, 8, 8), np.float32))
    _half(path)
    return path


# (id, builder, words). read_image is generic (2D and 4D are valid images); the 3D check is
# LoadVolumed's, so every case goes through it, and read_image's own cases through both.
IMAGE_CASES = [
    ("2d", lambda p: _nifti(p, np.ones((8, 8), np.float32)), ["expected a 3D volume"], False),
    ("4d", lambda p: _nifti(p, np.ones((8, 8, 8, 2), np.float32)), ["expected a 3D volume"], False),
    ("one-slice-3d", lambda p: _nifti(p, np.ones((8, 8, 1), np.float32)), ["fewer than 8 voxels"], False),
    ("inf-voxel", _inf_voxel, ["nan or inf"], True),
    ("singular-affine", _singular_affine, ["affine is singular"], True),
    ("empty-file", lambda p: (p.write_bytes(b""), p)[1], ["corrupt or truncated"], True),
    ("truncated-gz", _halved, ["corrupt or truncated"], True),
    ("folder", lambda p: (p.mkdir(), p)[1], ["corrupt or truncated"], True),
]


@pytest.mark.parametrize("build, words, in_read_image", [c[1:] for c in IMAGE_CASES], ids=[c[0] for c in IMAGE_CASES])
def test_bad_nifti_volume_is_refused(tmp_path, build, words, in_read_image):
    path = build(tmp_path / "vol.nii.gz")
    _assert_refused(lambda: LoadVolumed("image")({"image": str(path)}), tmp_path, path, *words)
    if in_read_image:
        _assert_refused(lambda: read_image(path), tmp_path, path, *words)


def test_read_image_accepts_2d_and_4d_which_only_the_volume_loader_refuses(tmp_path):
    flat = _nifti(tmp_path / "flat.nii", np.arange(64, dtype=np.float32).reshape(8, 8))
    series = _nifti(tmp_path / "series.nii", np.ones((8, 8, 8, 2), np.float32))
    assert tuple(read_image(flat)[0].shape) == (8, 8) and tuple(read_image(series)[0].shape) == (8, 8, 8, 2)


# --- label maps ------------------------------------------------------------------------------------


def _labels(array: np.ndarray) -> Callable[[Path], Path]:
    return lambda p: _nifti(p, array)


_NAN_LABELS = np.full((8, 8, 8), 2, np.float32)
_NAN_LABELS[1, 1, 1] = np.nan
_NEGATIVE_LABELS = np.full((8, 8, 8), 2, np.int16)
_NEGATIVE_LABELS[1, 1, 1] = -3

# 2D, empty, unknown (999) and non-integer maps are in tests/test_synth.py.
LABEL_CASES = [
    ("missing", lambda p: p, ["not found"]),
    ("empty-file", lambda p: (p.write_bytes(b""), p)[1], ["not a readable nifti"]),
    ("truncated-gz", _halved, ["not a readable nifti"]),
    ("random-bytes", lambda p: (p.write_bytes(_RNG_BYTES), p)[1], ["not a readable nifti"]),
    ("folder", lambda p: (p.mkdir(), p)[1], ["not a readable nifti"]),
    ("4d", _labels(np.full((8, 8, 8, 1), 2, np.int16)), ["must be 3D"]),
    ("nan", _labels(_NAN_LABELS), ["non-integer"]),
    ("negative-label", _labels(_NEGATIVE_LABELS), ["does not know: [-3]"]),
]


@pytest.mark.parametrize("build, words", [c[1:] for c in LABEL_CASES], ids=[c[0] for c in LABEL_CASES])
def test_bad_label_map_is_refused(tmp_path, build, words):
    path = build(tmp_path / "labels.nii.gz")
    _assert_refused(lambda: load_label_map(path), tmp_path, path, *words)


# --- writers: a folder where the file goes, a file where the folder goes ---------------------------

_K = random_kspace(2, 8, 8)
_K4 = random_kspace(1, 2, 8, 8)
WRITERS = [
    ("save_kspace-npy", "out.npy", lambda p: save_kspace(p, _K)),
    ("save_kspace-h5", "out.h5", lambda p: save_kspace(p, _K)),
    ("save_kspace-cfl", "out.cfl", lambda p: save_kspace(p, _K)),
    ("write_fastmri", "out.h5", lambda p: write_fastmri(p, _K4)),
    ("write_ismrmrd", "out.h5", lambda p: write_ismrmrd(p, _K4)),
    ("write_image-nifti", "out.nii.gz", lambda p: write_image(p, np.ones((4, 4, 4), np.float32), np.eye(4))),
    ("write_image-mha", "out.mha", lambda p: write_image(p, np.ones((4, 4, 4), np.float32), np.eye(4))),
]


@pytest.mark.parametrize("name, write", [c[1:] for c in WRITERS], ids=[c[0] for c in WRITERS])
def test_writer_refuses_a_folder_where_its_file_goes(tmp_path, name, write):
    target = tmp_path / name
    target.mkdir()
    (target / "keep.txt").write_text("user data")
    _assert_refused(lambda: write(target), tmp_path, target, "is a folder")


@pytest.mark.parametrize("name, write", [c[1:] for c in WRITERS], ids=[c[0] for c in WRITERS])
@pytest.mark.parametrize("depth", [1, 2], ids=["parent-is-a-file", "grandparent-is-a-file"])
def test_writer_refuses_an_output_folder_that_is_a_file(tmp_path, name, write, depth):
    afile = tmp_path / "outputs"
    afile.write_text("not a folder")
    target = afile / "sub" / name if depth == 2 else afile / name
    _assert_refused(lambda: write(target), tmp_path, target, "a file is in the way")
