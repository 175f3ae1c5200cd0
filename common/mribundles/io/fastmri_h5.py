"""fastMRI HDF5 files: ``kspace`` (slice, coil, ky, kx) complex64, plus optional
``reconstruction_rss``, ``mask`` and ``ismrmrd_header`` datasets and file attributes."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np
import torch

from mribundles.errors import InvalidInputError
from mribundles.io.atomic import atomic_path
from mribundles.io.validation import (
    as_kspace_tensor,
    one_line,
    require_file,
    require_finite,
    to_numpy,
)

ISMRMRD_NS = "http://www.ismrm.org/ISMRMRD"


@dataclass
class FastMRIVolume:
    """One fastMRI file in memory.

    Attributes:
        kspace: (slice, coil, ky, kx) complex64. Single-coil files, stored (slice, ky, kx),
            get a coil axis of size 1.
        reconstruction_rss: (slice, H, W) float32, or None.
        mask: bool, the file's shape (fastMRI: 1D over kx, the last k-space axis), or None.
        ismrmrd_header: the ISMRMRD XML text, or None.
        attrs: the file's HDF5 attributes as Python values (``max``, ``norm``, ``acquisition``...).
    """

    kspace: torch.Tensor
    reconstruction_rss: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    ismrmrd_header: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)


@contextmanager
def open_h5(path: str | os.PathLike) -> Iterator[h5py.File]:
    """Open an HDF5 file read-only; a missing, truncated or corrupt file raises
    ``InvalidInputError``, as does a failed read of a dataset inside the block."""
    path = require_file(path)
    try:
        hf = h5py.File(path, "r")
    except OSError as exc:
        raise InvalidInputError(
            f"not a readable HDF5 file (truncated or corrupt): {one_line(exc)}", path
        ) from exc
    try:
        with hf:
            yield hf
    except OSError as exc:  # a dataset whose bytes are cut off or damaged
        raise InvalidInputError(f"corrupt HDF5 data: {one_line(exc)}", path) from exc


def read_dataset(hf: h5py.File, key: str) -> np.ndarray:
    """Dataset ``key`` as numpy; a missing key names the keys that do exist.

    Compound datasets with real/imaginary fields (``r``/``i`` or ``real``/``imag``, as some
    converters write) are combined into one complex array.
    """
    if key not in hf:
        raise InvalidInputError(
            f"missing dataset '{key}' (datasets present: {sorted(hf.keys())})", hf.filename
        )
    data = hf[key][()]
    names = data.dtype.names if isinstance(data, np.ndarray) else None
    for re_name, im_name in (("r", "i"), ("real", "imag")):
        if names and set(names) == {re_name, im_name}:
            return data[re_name] + 1j * data[im_name]
    return np.asarray(data)


def _python_value(value: Any) -> Any:
    """HDF5 attribute -> plain Python (numpy scalars and bytes come back from h5py)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_fastmri(path: str | os.PathLike) -> FastMRIVolume:
    """Read and validate a fastMRI HDF5 file (see ``FastMRIVolume`` for shapes)."""
    with open_h5(path) as hf:
        kspace = read_dataset(hf, "kspace")
        if kspace.ndim == 3 and np.iscomplexobj(kspace):  # single-coil: (slice, ky, kx)
            kspace = kspace[:, None]
        if kspace.ndim != 4:
            raise InvalidInputError(
                f"k-space has shape {kspace.shape}; expected (slice, coil, ky, kx)", path
            )
        kspace = as_kspace_tensor(kspace, path)
        rss = read_dataset(hf, "reconstruction_rss") if "reconstruction_rss" in hf else None
        mask = read_dataset(hf, "mask") if "mask" in hf else None
        header = read_dataset(hf, "ismrmrd_header") if "ismrmrd_header" in hf else None
        attrs = {k: _python_value(v) for k, v in hf.attrs.items()}
    return FastMRIVolume(
        kspace=kspace,
        reconstruction_rss=None if rss is None else _rss_tensor(rss, path),
        mask=None if mask is None else _mask_tensor(mask, kspace.shape[-1], path),
        ismrmrd_header=None if header is None else _python_value(header[()]),
        attrs=attrs,
    )


def _rss_tensor(rss: np.ndarray, path: str | os.PathLike) -> torch.Tensor:
    rss = np.asarray(rss)
    if rss.ndim != 3 or np.iscomplexobj(rss):
        raise InvalidInputError(
            f"reconstruction_rss has shape {rss.shape} dtype {rss.dtype}; "
            "expected real (slice, H, W)",
            path,
        )
    require_finite(rss, path, "reconstruction_rss")
    return torch.from_numpy(np.array(rss, dtype=np.float32))


def _mask_tensor(mask: np.ndarray, kx: int, path: str | os.PathLike) -> torch.Tensor:
    mask = np.asarray(mask)
    if mask.ndim == 0 or mask.shape[-1] != kx:
        raise InvalidInputError(
            f"mask length mismatch: mask shape {mask.shape} but k-space's last dimension is {kx}",
            path,
        )
    return torch.from_numpy(np.array(mask != 0))


def write_fastmri(
    path: str | os.PathLike,
    kspace: torch.Tensor | np.ndarray,
    reconstruction_rss: torch.Tensor | np.ndarray | None = None,
    mask: torch.Tensor | np.ndarray | None = None,
    ismrmrd_header: str | None = None,
    attrs: dict[str, Any] | None = None,
) -> None:
    """Write a fastMRI-layout HDF5 file atomically.

    Args:
        path: destination ``.h5``.
        kspace: (slice, coil, ky, kx) complex; stored complex64 like fastMRI's files.
            A 3D array is stored as given (fastMRI's single-coil layout is (slice, ky, kx)).
        reconstruction_rss: (slice, H, W) real, stored float32.
        mask: bool or 0/1, its last axis of length kx (fastMRI stores 1D (kx,)), stored bool.
        ismrmrd_header: ISMRMRD XML (see ``minimal_ismrmrd_header``), stored as bytes.
        attrs: HDF5 file attributes: str, numbers or bools (``max``, ``norm``,
            ``acquisition``, ``patient_id``, ``kspace_origin``...).
    """
    kspace = as_kspace_tensor(to_numpy(kspace), path).numpy()
    rss = None if reconstruction_rss is None else _rss_tensor(to_numpy(reconstruction_rss), path)
    mask_t = None if mask is None else _mask_tensor(to_numpy(mask), kspace.shape[-1], path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as hf:
        hf.create_dataset("kspace", data=kspace)
        if rss is not None:
            hf.create_dataset("reconstruction_rss", data=rss.numpy())
        if mask_t is not None:
            hf.create_dataset("mask", data=mask_t.numpy())
        if ismrmrd_header is not None:
            hf.create_dataset("ismrmrd_header", data=ismrmrd_header.encode("utf-8"))
        for key, value in (attrs or {}).items():
            try:
                hf.attrs[key] = value
            except (TypeError, ValueError) as exc:
                raise InvalidInputError(
                    f"attribute '{key}' cannot be stored in HDF5: {one_line(exc)}", path
                ) from exc


def minimal_ismrmrd_header(
    matrix: Sequence[int],
    fov_mm: Sequence[float],
    recon_matrix: Sequence[int] | None = None,
    h1_frequency_hz: int = 127_728_000,
) -> str:
    """A small ISMRMRD XML header for a Cartesian acquisition.

    It holds what fastMRI's data loader reads: ``encoding/encodedSpace/matrixSize``,
    ``encoding/reconSpace/matrixSize`` and ``encodingLimits/kspace_encoding_step_1``
    ``center`` (ky // 2) and ``maximum`` (ky - 1).

    Args:
        matrix: encoded matrix (x=kx, y=ky[, z]); z defaults to 1.
        fov_mm: field of view in mm (x, y[, z]); z defaults to 1.0.
        recon_matrix: reconstructed matrix, defaults to ``matrix``.
        h1_frequency_hz: the required ``experimentalConditions`` entry (default 3 T).
    """
    enc = _xyz(matrix, 1, int)
    rec = _xyz(recon_matrix if recon_matrix is not None else matrix, 1, int)
    fov = _xyz(fov_mm, 1.0, float)
    root = ET.Element("ismrmrdHeader", xmlns=ISMRMRD_NS)
    cond = ET.SubElement(root, "experimentalConditions")
    ET.SubElement(cond, "H1resonanceFrequency_Hz").text = str(int(h1_frequency_hz))
    encoding = ET.SubElement(root, "encoding")
    for space, size in (("encodedSpace", enc), ("reconSpace", rec)):
        node = ET.SubElement(encoding, space)
        _add_xyz(ET.SubElement(node, "matrixSize"), size)
        _add_xyz(ET.SubElement(node, "fieldOfView_mm"), fov)
    limits = ET.SubElement(encoding, "encodingLimits")
    for name, n in (("kspace_encoding_step_1", enc[1]), ("kspace_encoding_step_2", enc[2])):
        node = ET.SubElement(limits, name)
        for tag, value in (("minimum", 0), ("maximum", n - 1), ("center", n // 2)):
            ET.SubElement(node, tag).text = str(value)
    ET.SubElement(encoding, "trajectory").text = "cartesian"
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode")


def _xyz(values: Sequence, default: Any, kind: type) -> tuple:
    values = [kind(v) for v in values]
    if len(values) not in (2, 3):
        raise InvalidInputError(f"expected 2 or 3 values (x, y[, z]), got {values}")
    return tuple(values + [kind(default)] * (3 - len(values)))


def _add_xyz(node: ET.Element, values: tuple) -> None:
    for axis, value in zip("xyz", values):
        ET.SubElement(node, axis).text = str(value)
