"""Geometry, decided once: reconstructed slices -> a volume with the affine its k-space file states.

A reconstruction bundle run on its own (`handlers.ReconstructionWriter`) and a chain
(`chains.ReconStage`) both assemble their slices here, so the same file gives the same volume
on the same grid either way.

Conventions: one slice's image is (ky, kx), rows by columns, as ``physics.ifft2c`` makes it of
one slice of k-space; a volume is (1, x, y, z) = (1, kx, ky, slice), so NIfTI's first axis runs
along the image columns, and its affine maps (column, row, slice) to RAS millimetres.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mribundles.errors import InvalidInputError
from mribundles.io.fastmri_h5 import open_h5
from mribundles.io.kspace import H5_SUFFIXES, kspace_shape, stated_affine
from mribundles.io.validation import one_line

__all__ = ["assemble_volume", "header_spacing", "kspace_affine", "stack_volume"]


def kspace_affine(kspace_file: str | os.PathLike, voxel_size: Sequence[float] = (1.0, 1.0, 1.0)) -> torch.Tensor:
    """The (column, row, slice) -> RAS mm affine (float64, 4x4) of a k-space file's images, first
    found of:

    1. the affine the file states (`io.kspace.stated_affine`): an ISMRMRD file's acquisition
       geometry, or the ``affine`` attribute of the fastMRI files this library writes;
    2. the pixel sizes of a fastMRI file's ``ismrmrd_header`` (`header_spacing`), on a diagonal;
    3. ``voxel_size`` (column, row, slice spacing in mm) on a diagonal.

    Refuses (InvalidInputError, naming the file) a missing, corrupt or truncated file.
    """
    path = Path(kspace_file)
    kspace_shape(path)  # refuses a missing, corrupt or truncated file, naming it
    affine = stated_affine(path)
    if affine is not None:
        return torch.as_tensor(affine, dtype=torch.float64)
    spacing = header_spacing(path)
    spacing = tuple(map(float, voxel_size)) if spacing is None else spacing
    return torch.as_tensor(np.diag([*spacing, 1.0]), dtype=torch.float64)


def header_spacing(kspace_file: str | os.PathLike) -> tuple[float, float, float] | None:
    """(column, row, slice) spacing in mm from a fastMRI file's ``ismrmrd_header``, or None.

    In-plane: the encoded field of view over the encoded matrix. ISMRMRD's x is the readout,
    which fastMRI stores along the rows; a header whose x runs along the columns instead (as
    `io.fastmri_h5.minimal_ismrmrd_header` documents its ``matrix``) is recognised by its matrix
    sizes. Slice: the encoded field of view's z over its matrix z, the slice thickness (a 2D
    header states no gap). None for files without a header, or whose header describes another
    matrix than the k-space holds.
    """
    path = Path(kspace_file)
    if path.suffix.lower() not in H5_SUFFIXES:
        return None
    with open_h5(path) as hf:
        if "ismrmrd_header" not in hf or "kspace" not in hf:
            return None
        text = hf["ismrmrd_header"][()]
        rows, columns = hf["kspace"].shape[-2:]
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise InvalidInputError(f"ismrmrd_header is not valid XML: {one_line(exc)}", path) from exc
    space = _child(root, "encoding", "encodedSpace")
    matrix = _xyz(space, "matrixSize")
    fov = _xyz(space, "fieldOfView_mm")
    if matrix is None or fov is None:
        return None
    (mx, my, mz), (fx, fy, fz) = matrix, fov
    if (rows, columns) == (mx, my):  # ISMRMRD's x, the readout, along the rows (fastMRI's files)
        return fy / my, fx / mx, fz / mz
    if (rows, columns) == (my, mx):
        return fx / mx, fy / my, fz / mz
    return None


def _child(node: ET.Element | None, *names: str) -> ET.Element | None:
    """The element at the path ``names`` below ``node``, whatever the XML namespace."""
    for name in names:
        if node is None:
            return None
        node = next((c for c in node if c.tag.rsplit("}", 1)[-1] == name), None)
    return node


def _xyz(space: ET.Element | None, name: str) -> tuple[float, float, float] | None:
    """The positive (x, y, z) numbers of ``space/name``, or None if any is missing or not."""
    values = []
    for axis in "xyz":
        node = _child(space, name, axis)
        try:
            values.append(float(node.text))
        except (AttributeError, TypeError, ValueError):
            return None
    return tuple(values) if all(np.isfinite(v) and v > 0 for v in values) else None


def stack_volume(slices: torch.Tensor, affine: torch.Tensor):
    """(slice, ky, kx) images -> a (1, kx, ky, slice) MetaTensor with ``affine``, on the slices'
    device (a view: no copy, and gradients flow through). Metadata the slices carry (a network's
    MetaTensor output) is dropped: the volume's geometry is ``affine``."""
    from monai.data import MetaTensor  # MONAI takes seconds to import

    if slices.ndim != 3:
        raise ValueError(f"expected slices (slice, ky, kx), got shape {tuple(slices.shape)}")
    plain = slices.as_tensor() if isinstance(slices, MetaTensor) else slices
    return MetaTensor(plain.permute(2, 1, 0)[None], affine=torch.as_tensor(affine).to(slices.device))


def assemble_volume(slices: torch.Tensor, kspace_file: str | os.PathLike, voxel_size: Sequence[float] = (1.0, 1.0, 1.0)):
    """Every slice of ``kspace_file``, reconstructed, as one volume on the file's grid.

    Args:
        slices: (slice, ky, kx) images, one per slice of the file in its order (one for a
            single-slice file).
        kspace_file: the k-space they were reconstructed from; its geometry (`kspace_affine`).
        voxel_size: (column, row, slice) spacing in mm for a file that states no geometry.

    Returns:
        a (1, kx, ky, slice) MetaTensor on the slices' device, with the affine and the file's
        name (``filename_or_obj``).

    Raises:
        InvalidInputError: a missing or unreadable file, or a slice count other than the file's.
    """
    shape = kspace_shape(kspace_file)
    expected = shape[0] if len(shape) == 4 else 1
    if slices.shape[0] != expected:
        raise InvalidInputError(f"{slices.shape[0]} reconstructed slices for a file of {expected}: a volume needs "
                                "every slice of its file", kspace_file)
    volume = stack_volume(slices, kspace_affine(kspace_file, voxel_size))
    volume.meta["filename_or_obj"] = str(kspace_file)
    return volume
