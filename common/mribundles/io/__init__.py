"""Readers and writers with validation: fastMRI HDF5, BART .cfl, .npy k-space; NIfTI, NRRD,
MHA and DICOM images. Bad input raises ``mribundles.errors.InvalidInputError``; every writer
writes atomically."""

from mribundles.io.atomic import atomic_path
from mribundles.io.cfl import read_cfl, write_cfl
from mribundles.io.fastmri_h5 import (
    FastMRIVolume,
    minimal_ismrmrd_header,
    read_fastmri,
    write_fastmri,
)
from mribundles.io.images import read_image, write_image
from mribundles.io.kspace import kspace_shape, load_kspace, save_kspace

__all__ = [
    "AtomicNibabelWriter",
    "FastMRIVolume",
    "atomic_path",
    "kspace_shape",
    "load_kspace",
    "minimal_ismrmrd_header",
    "read_cfl",
    "read_fastmri",
    "read_image",
    "save_kspace",
    "write_cfl",
    "write_fastmri",
    "write_image",
]


def __getattr__(name: str):
    # MONAI takes seconds to import; only code that saves through MONAI should pay for it.
    if name == "AtomicNibabelWriter":
        from mribundles.io.writers import AtomicNibabelWriter

        return AtomicNibabelWriter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
