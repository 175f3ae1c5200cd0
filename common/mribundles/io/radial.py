"""Radial k-space files: HDF5 with the fastMRI layout's names where they apply.

- ``kspace``: (slice, coil, spokes, readout) complex64, spoke by spoke in acquisition order;
- ``trajectory``: (2, spokes, readout) float32, (ky, kx) in radians per pixel
  (`physics.radial.golden_angle_trajectory`), shared by every slice;
- ``reconstruction_rss`` (optional): (slice, N, N) float32 reference images;
- attributes: ``sampling`` ("radial golden-angle"), ``kspace_origin`` and anything else.

A Cartesian fastMRI file has no ``trajectory``; that difference is what both readers check, so a
file of one kind given to a bundle of the other is refused with its name and the reason.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from mribundles.errors import InvalidInputError
from mribundles.io.atomic import atomic_path
from mribundles.io.fastmri_h5 import open_h5, read_dataset
from mribundles.io.validation import as_kspace_tensor, require_finite, to_numpy

__all__ = ["is_radial", "read_radial_reference", "read_radial_slice", "write_radial"]


def is_radial(hf) -> bool:
    """Whether an open HDF5 file holds radial k-space (it has a ``trajectory``)."""
    return "trajectory" in hf


def write_radial(path: str | os.PathLike, kspace, trajectory, reconstruction_rss=None, attrs: dict | None = None) -> None:
    """Write a radial file atomically (see the module docstring for the layout)."""
    import h5py

    kspace, trajectory = to_numpy(kspace), to_numpy(trajectory)
    if kspace.ndim != 4 or trajectory.shape != (2, *kspace.shape[-2:]):
        raise ValueError(f"radial k-space (slice, coil, spokes, readout) and trajectory (2, spokes, readout) expected, "
                         f"got {kspace.shape} and {trajectory.shape}")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as hf:
        hf.create_dataset("kspace", data=kspace.astype(np.complex64))
        hf.create_dataset("trajectory", data=trajectory.astype(np.float32))
        if reconstruction_rss is not None:
            hf.create_dataset("reconstruction_rss", data=to_numpy(reconstruction_rss).astype(np.float32))
        hf.attrs["sampling"] = "radial golden-angle"
        for key, value in (attrs or {}).items():
            hf.attrs[key] = value


def read_radial_slice(path: str | os.PathLike, slice_index: int, reference: bool = False):
    """One slice of a radial file: (kspace (coil, spokes, readout) complex64, trajectory
    (2, spokes, readout) float32, reference (N, N) float32 or None).

    Refuses, naming the file: a Cartesian file, a trajectory that does not fit the k-space, a
    slice out of range, NaN or Inf values, and ``reference=True`` without ``reconstruction_rss``.
    """
    with open_h5(path) as hf:
        if not is_radial(hf):
            raise InvalidInputError("Cartesian k-space (no 'trajectory' dataset): reconstruct it with a Cartesian bundle", path)
        shape = hf["kspace"].shape if "kspace" in hf else None
        if shape is None or len(shape) != 4:
            raise InvalidInputError(f"radial k-space must be (slice, coil, spokes, readout), got {shape}", path)
        if not 0 <= slice_index < shape[0]:
            raise InvalidInputError(f"slice {slice_index} out of range: the file holds {shape[0]}", path)
        trajectory = read_dataset(hf, "trajectory")
        if trajectory.shape != (2, *shape[-2:]):
            raise InvalidInputError(f"trajectory {trajectory.shape} does not match the k-space's spokes x readout "
                                    f"{tuple(shape[-2:])}: expected (2, {shape[-2]}, {shape[-1]})", path)
        kspace = hf["kspace"][slice_index]
    require_finite(trajectory, path, "trajectory")
    kspace = as_kspace_tensor(kspace, path)  # refuses NaN/Inf and non-complex data
    image = read_radial_reference(path, slice_index) if reference else None
    return kspace, torch.from_numpy(trajectory.astype(np.float32)), image


def read_radial_reference(path: str | os.PathLike, slice_index: int) -> torch.Tensor:
    """Slice ``slice_index`` of a radial file's ``reconstruction_rss``, (N, N) float32, read
    without its k-space; a file without one is refused, naming the datasets it has."""
    with open_h5(path) as hf:
        if "reconstruction_rss" not in hf:
            read_dataset(hf, "reconstruction_rss")  # raises, naming the datasets present
        return torch.from_numpy(hf["reconstruction_rss"][slice_index].astype(np.float32))
