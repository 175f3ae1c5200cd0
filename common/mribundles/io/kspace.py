"""Load and save multi-coil k-space in any of our formats as torch complex64.

Shapes: (coil, ky, kx) for one slice, (slice, coil, ky, kx) for a volume. The format comes
from the suffix: ``.h5``/``.hdf5`` (fastMRI, or ISMRMRD raw data when the file has ISMRMRD's
``dataset/xml`` header), ``.npy``, ``.cfl``/``.hdr`` (BART; the bare name works too) and
``.dat`` (Siemens twix). Raw scanner files (ISMRMRD, twix) read in fastMRI's layout,
(slice, coil, readout, phase-encode), with the readout oversampling kept.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from mribundles.errors import InvalidInputError
from mribundles.io import cfl
from mribundles.io.atomic import atomic_path
from mribundles.io.fastmri_h5 import open_h5, read_dataset, write_fastmri
from mribundles.io.ismrmrd import is_ismrmrd_h5, ismrmrd_shape, read_ismrmrd
from mribundles.io.twix import TWIX_SUFFIXES, read_twix, twix_shape
from mribundles.io.validation import as_kspace_tensor, one_line, require_file, require_kspace_dims, to_numpy

H5_SUFFIXES = (".h5", ".hdf5")
CFL_SUFFIXES = (".cfl", ".hdr")
# BART's axes for Cartesian k-space: readout (kx), phase 1 (ky), phase 2 (kz), coil, slice.
BART_READ, BART_PHS1, BART_PHS2, BART_COIL, BART_SLICE = 0, 1, 2, 3, 13


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in H5_SUFFIXES:
        # ISMRMRD raw data is HDF5 too: its `dataset/xml` header tells it apart (only the file's
        # index is read, not its samples).
        with open_h5(path) as hf:
            return "ismrmrd" if is_ismrmrd_h5(hf) else "h5"
    if suffix == ".npy":
        return "npy"
    if suffix in TWIX_SUFFIXES:
        return "twix"
    if suffix in CFL_SUFFIXES or path.with_name(path.name + ".hdr").exists():
        return "cfl"
    raise InvalidInputError(
        f"unsupported k-space format '{suffix}' (expected .h5, .hdf5, .npy, .cfl, .hdr or .dat)", path
    )


def load_kspace(path: str | os.PathLike, key: str = "kspace", slice_index: int | None = None) -> torch.Tensor:
    """Read and validate k-space.

    Args:
        path: the file; for BART ``x``, ``x.cfl`` or ``x.hdr``.
        key: the HDF5 dataset to read (fastMRI ``.h5`` only).
        slice_index: read only this slice of a multi-slice file (HDF5, ISMRMRD, twix and
            ``.npy`` read just that slice from disk), giving (coil, ky, kx).

    Returns:
        complex64 tensor, (coil, ky, kx) or (slice, coil, ky, kx). HDF5 and ``.npy`` arrays
        keep their stored shape; BART arrays are mapped from BART's axes (see ``from_bart``);
        ISMRMRD files give (slice, coil, readout, phase-encode) (`io.ismrmrd.read_ismrmrd`),
        twix files (coil, readout, phase-encode) for one slice (`io.twix.read_twix`).

    Raises:
        InvalidInputError: missing, unreadable, truncated or corrupt file; a radial file;
            real dtype; not 3D/4D; empty; all zeros; NaN or Inf; values so large the FFT overflows.
    """
    path = Path(path)
    kind = _format(path)
    if kind == "ismrmrd":
        return read_ismrmrd(path, slice_index=slice_index).kspace
    if kind == "twix":
        return read_twix(path, slice_index=slice_index)
    if kind == "h5":
        with open_h5(path) as hf:
            if "trajectory" in hf:  # `io.radial`: samples along spokes are no Cartesian grid
                raise InvalidInputError("radial k-space (the file has a 'trajectory'): reconstruct it with a radial bundle "
                                        "(brain_mri_recon_reconresnet with sampling radial)", path)
            if slice_index is None:
                array = read_dataset(hf, key)
            else:
                array = _select_slice(_h5_dataset(hf, key), slice_index, path)
    elif kind == "npy":
        array = _load_npy(path, mmap=slice_index is not None)
        if slice_index is not None:
            array = _select_slice(array, slice_index, path)
    else:
        array = from_bart(cfl.read_cfl(path), path)
        if slice_index is not None:
            array = _select_slice(array, slice_index, path)
    return as_kspace_tensor(array, path)


def kspace_shape(path: str | os.PathLike, key: str = "kspace") -> tuple[int, ...]:
    """The shape of the k-space in a file, read from its header without loading the data:
    (coil, ky, kx) or (slice, coil, ky, kx), else InvalidInputError."""
    path = Path(path)
    kind = _format(path)
    if kind == "ismrmrd":
        return ismrmrd_shape(path)
    if kind == "twix":
        return twix_shape(path)
    if kind == "h5":
        with open_h5(path) as hf:
            return require_kspace_dims(tuple(_h5_dataset(hf, key).shape), path)
    if kind == "npy":
        return require_kspace_dims(tuple(_load_npy(path, mmap=True).shape), path)
    return require_kspace_dims(tuple(from_bart(cfl.read_cfl(path), path).shape), path)


def stated_affine(path: str | os.PathLike) -> np.ndarray | None:
    """The (column, row, slice) -> RAS mm affine that a k-space file states, or None.

    ISMRMRD files state it through their acquisitions' geometry (`io.ismrmrd`: column =
    phase-encode, row = readout); fastMRI files written by this library may carry it as the
    ``affine`` attribute. Other files (and ISMRMRD files whose slices are not evenly spaced on
    one line) state none.
    """
    path = Path(path)
    kind = _format(path)
    if kind == "ismrmrd":
        from mribundles.io.ismrmrd import ismrmrd_affine

        return ismrmrd_affine(path)
    if kind != "h5":
        return None
    with open_h5(path) as hf:
        if "affine" not in hf.attrs:
            return None
        affine = np.asarray(hf.attrs["affine"], dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise InvalidInputError(f"attribute 'affine' must be a finite 4x4 matrix, got shape {affine.shape}", path)
    return affine


def _h5_dataset(hf, key: str):
    if key not in hf:
        read_dataset(hf, key)  # raises the missing-key error with the keys present
    return hf[key]


def _select_slice(array, index: int, path: Path) -> np.ndarray:
    if len(array.shape) != 4:
        raise InvalidInputError(f"slice {index} requested from single-slice k-space {tuple(array.shape)}", path)
    if not -array.shape[0] <= index < array.shape[0]:
        raise InvalidInputError(f"slice {index} out of range for {array.shape[0]} slices", path)
    try:
        return np.asarray(array[index])
    except OSError as exc:  # HDF5 chunk cut off or damaged
        raise InvalidInputError(f"corrupt HDF5 data: {one_line(exc)}", path) from exc


def _load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    require_file(path)
    try:
        # allow_pickle=False: a k-space file must never run code when it is read. A memory map
        # reads only the header until a slice is indexed; it is opened read-only.
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidInputError(
            f"cannot read .npy (truncated or corrupt): {one_line(exc)}", path
        ) from exc


def save_kspace(path: str | os.PathLike, kspace: torch.Tensor | np.ndarray) -> None:
    """Validate and write k-space atomically as ``.npy``, BART ``.cfl``/``.hdr`` or ``.h5``.

    Args:
        path: destination; the suffix chooses the format (a bare name means BART).
        kspace: complex (coil, ky, kx) or (slice, coil, ky, kx); stored complex64.
    """
    path = Path(path)
    array = as_kspace_tensor(to_numpy(kspace), path).numpy()
    suffix = path.suffix.lower()
    if suffix in H5_SUFFIXES:
        write_fastmri(path, array)
    elif suffix == ".npy":
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, array)  # a file object: np.save would append .npy to some names
    elif suffix in CFL_SUFFIXES or suffix == "":
        cfl.write_cfl(path, to_bart(array))
    else:
        raise InvalidInputError(
            f"unsupported k-space format '{suffix}' for writing (expected .h5, .hdf5, .npy or .cfl; ISMRMRD: "
            "io.write_ismrmrd)", path
        )


def to_bart(kspace: np.ndarray) -> np.ndarray:
    """(coil, ky, kx) -> BART (kx, ky, 1, coil); (slice, coil, ky, kx) -> BART with slices on
    axis 13. Returns a view; BART's trailing singleton axes are left implicit."""
    if kspace.ndim == 3:
        return kspace.transpose(2, 1, 0)[:, :, None, :]
    dims = [1] * (BART_SLICE + 1)
    dims[BART_READ], dims[BART_PHS1], dims[BART_COIL], dims[BART_SLICE] = kspace.shape[::-1]
    # (slice, coil, ky, kx) reversed is (kx, ky, coil, slice); reshape slots in the unit axes.
    return kspace.transpose(3, 2, 1, 0).reshape(dims)


def from_bart(array: np.ndarray, path: str | os.PathLike | None = None) -> np.ndarray:
    """BART k-space -> (coil, a, b), or (slice, coil, a, b) when there is more than one slice.

    K-space may lie on any two of BART's readout (0), phase-1 (1) and phase-2 (2) axes, coils on
    axis 3 and slices on axis 13; every other axis must have size 1. The phase axes come first,
    in BART's order, and the readout last:

        (kx, ky, 1, coil)  -> (coil, ky, kx)   the usual 2D slice (what ``to_bart`` writes)
        (kx, 1, kz, coil)  -> (coil, kz, kx)
        (1, ky, kz, coil)  -> (coil, ky, kz)   a slice of a 3D scan after the readout FFT, as
                                               BART's own ESPIRiT examples store it

    A file whose k-space spans fewer than two of the three axes reads as (coil, ky, kx).
    """
    dims = list(array.shape) + [1] * (cfl.BART_DIMS - array.ndim)
    spatial = [a for a in (BART_READ, BART_PHS1, BART_PHS2) if dims[a] != 1]
    if len(spatial) == 3:
        raise InvalidInputError(
            f"BART dims {dims} hold 3D k-space on axes 0, 1 and 2; only 2D k-space (two of "
            "readout/phase-1/phase-2) is supported: Fourier-transform the readout first", path)
    if len(spatial) < 2:
        spatial = [BART_READ, BART_PHS1]
    kept = (*spatial, BART_COIL, BART_SLICE)
    extra = {i: d for i, d in enumerate(dims) if i not in kept and d != 1}
    if extra:
        raise InvalidInputError(
            f"BART dims {dims} use axes {sorted(extra)} beyond k-space/coil/slice "
            "(two of 0, 1, 2; 3; 13); only 2D multi-slice Cartesian k-space is supported",
            path,
        )
    # Pure indexing (no memory-order reshape): drop the unit axes, keep the rest in BART's order.
    index = tuple(slice(None) if i in kept else 0 for i in range(cfl.BART_DIMS))
    first, second = spatial  # BART's order; the readout (axis 0), when present, is first
    rows, cols = (second, first) if first == BART_READ else (first, second)
    order = [kept.index(BART_SLICE), kept.index(BART_COIL), kept.index(rows), kept.index(cols)]
    volume = array.reshape(dims)[index].transpose(order)  # (slice, coil, rows, cols)
    return volume[0] if volume.shape[0] == 1 else volume
