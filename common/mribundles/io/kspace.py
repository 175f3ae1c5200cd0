"""Load and save multi-coil k-space in any of our formats as torch complex64.

Shapes: (coil, ky, kx) for one slice, (slice, coil, ky, kx) for a volume. The format comes
from the suffix: ``.h5``/``.hdf5`` (fastMRI), ``.npy``, ``.cfl``/``.hdr`` (BART; the bare
name works too).
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
from mribundles.io.validation import as_kspace_tensor, one_line, require_file, to_numpy

H5_SUFFIXES = (".h5", ".hdf5")
CFL_SUFFIXES = (".cfl", ".hdr")
# BART's axes for Cartesian k-space: readout (kx), phase 1 (ky), phase 2 (kz), coil, slice.
BART_READ, BART_PHS1, BART_PHS2, BART_COIL, BART_SLICE = 0, 1, 2, 3, 13


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in H5_SUFFIXES:
        return "h5"
    if suffix == ".npy":
        return "npy"
    if suffix in CFL_SUFFIXES or path.with_name(path.name + ".hdr").exists():
        return "cfl"
    raise InvalidInputError(
        f"unsupported k-space format '{suffix}' (expected .h5, .hdf5, .npy, .cfl or .hdr)", path
    )


def load_kspace(path: str | os.PathLike, key: str = "kspace", slice_index: int | None = None) -> torch.Tensor:
    """Read and validate k-space.

    Args:
        path: the file; for BART ``x``, ``x.cfl`` or ``x.hdr``.
        key: the HDF5 dataset to read (``.h5`` only).
        slice_index: read only this slice of a multi-slice file (HDF5 and ``.npy`` read just
            that slice from disk), giving (coil, ky, kx).

    Returns:
        complex64 tensor, (coil, ky, kx) or (slice, coil, ky, kx). HDF5 and ``.npy`` arrays
        keep their stored shape; BART arrays are mapped from BART's axes (see ``from_bart``).

    Raises:
        InvalidInputError: missing, unreadable, truncated or corrupt file; a radial file;
            real dtype; not 3D/4D; empty; NaN or Inf.
    """
    path = Path(path)
    kind = _format(path)
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
    """The shape of the k-space in a file, read from its header without loading the data."""
    path = Path(path)
    kind = _format(path)
    if kind == "h5":
        with open_h5(path) as hf:
            return tuple(_h5_dataset(hf, key).shape)
    if kind == "npy":
        return tuple(_load_npy(path, mmap=True).shape)
    return tuple(from_bart(cfl.read_cfl(path), path).shape)


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
            f"unsupported k-space format '{suffix}' (expected .h5, .hdf5, .npy or .cfl)", path
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
    """BART (kx, ky, 1, coil, ..., slice@13) -> (coil, ky, kx), or (slice, coil, ky, kx) when
    there is more than one slice. Only 2D Cartesian data: any other axis must have size 1."""
    dims = list(array.shape) + [1] * (cfl.BART_DIMS - array.ndim)
    kept = (BART_READ, BART_PHS1, BART_COIL, BART_SLICE)
    extra = {i: d for i, d in enumerate(dims) if i not in kept and d != 1}
    if extra:
        raise InvalidInputError(
            f"BART dims {dims} use axes {sorted(extra)} beyond readout/phase/coil/slice "
            "(0, 1, 3, 13); only 2D multi-slice Cartesian k-space is supported",
            path,
        )
    # Pure indexing (no memory-order reshape): drop the unit axes, keep kx, ky, coil, slice.
    index = tuple(slice(None) if i in kept else 0 for i in range(cfl.BART_DIMS))
    volume = array.reshape(dims)[index].transpose(3, 2, 1, 0)  # (slice, coil, ky, kx)
    return volume[0] if volume.shape[0] == 1 else volume
