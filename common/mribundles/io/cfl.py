"""BART's ``.cfl``/``.hdr`` pair: raw complex64 data in Fortran order plus a text header.

The header reads ``# Dimensions`` followed by a line of sizes; BART writes 16 of them
(its ``DIMS``) and reads any number. Arrays here keep BART's own axis order (readout first,
coils on axis 3, slices on axis 13); ``mribundles.io.kspace`` maps that to (coil, ky, kx).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mribundles.errors import InvalidInputError
from mribundles.io.atomic import atomic_path
from mribundles.io.validation import require_file

BART_DIMS = 16
_ITEM = np.dtype(np.complex64).itemsize


def cfl_base(path: str | os.PathLike) -> Path:
    """The pair's common name: ``x.cfl``, ``x.hdr`` and ``x`` all give ``x``."""
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".cfl", ".hdr") else path


def _read_dims(hdr: Path) -> list[int]:
    lines = require_file(hdr).read_text(errors="replace").splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("# Dimensions") and i + 1 < len(lines):
            try:
                dims = [int(d) for d in lines[i + 1].split()]
            except ValueError:
                break
            if dims and all(d >= 0 for d in dims):
                return dims
            break
    raise InvalidInputError("malformed BART header: no valid '# Dimensions' line", hdr)


def read_cfl(path: str | os.PathLike) -> np.ndarray:
    """Read a BART array.

    Args:
        path: ``x``, ``x.cfl`` or ``x.hdr``; both files must exist.

    Returns:
        complex64 array with the header's dimensions, trailing singleton axes dropped
        (at least one axis kept), in BART's axis order.
    """
    base = cfl_base(path)
    cfl = require_file(base.with_name(base.name + ".cfl"))
    dims = _read_dims(base.with_name(base.name + ".hdr"))
    expected = int(np.prod(dims)) * _ITEM
    actual = cfl.stat().st_size
    if actual != expected:
        state = "truncated" if actual < expected else "too large"
        raise InvalidInputError(
            f"{state}: holds {actual} bytes but header dims {dims} need {expected}", cfl
        )
    while len(dims) > 1 and dims[-1] == 1:
        dims = dims[:-1]
    data = np.fromfile(cfl, dtype=np.complex64)
    return data.reshape(dims, order="F")


def write_cfl(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` (any shape, BART axis order) as ``x.cfl`` + ``x.hdr``, each atomically.

    The data file is written first, so a pair interrupted between the two has no header and
    a stale header never describes new data.
    """
    array = np.asarray(array)
    if array.ndim > BART_DIMS:
        raise InvalidInputError(f"BART supports at most {BART_DIMS} dimensions", path)
    base = cfl_base(path)
    dims = list(array.shape) + [1] * (BART_DIMS - array.ndim)
    with atomic_path(base.with_name(base.name + ".cfl")) as tmp:
        np.asarray(array, dtype=np.complex64).ravel(order="F").tofile(tmp)
    with atomic_path(base.with_name(base.name + ".hdr")) as tmp:
        tmp.write_text("# Dimensions\n" + " ".join(str(d) for d in dims) + "\n")
