"""Readers and writers with validation: fastMRI HDF5, ISMRMRD raw data, Siemens twix .dat,
BART .cfl, .npy k-space; NIfTI, NRRD, MHA and DICOM images. Bad input raises ``mribundles.errors.InvalidInputError``; every writer
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
from mribundles.io.ismrmrd import (
    IsmrmrdKspace,
    ismrmrd_affine,
    noise_covariance,
    prewhiten,
    read_ismrmrd,
    read_ismrmrd_noise,
    write_ismrmrd,
)
from mribundles.io.kspace import kspace_shape, load_kspace, save_kspace, stated_affine
from mribundles.io.twix import read_twix

__all__ = [
    "AtomicNibabelWriter",
    "FastMRIVolume",
    "IsmrmrdKspace",
    "atomic_path",
    "ismrmrd_affine",
    "kspace_shape",
    "load_kspace",
    "minimal_ismrmrd_header",
    "noise_covariance",
    "prewhiten",
    "read_cfl",
    "read_fastmri",
    "read_image",
    "read_ismrmrd",
    "read_ismrmrd_noise",
    "read_twix",
    "save_kspace",
    "stated_affine",
    "write_cfl",
    "write_fastmri",
    "write_image",
    "write_ismrmrd",
]


def __getattr__(name: str):
    # MONAI takes seconds to import; only code that saves through MONAI should pay for it.
    if name == "AtomicNibabelWriter":
        from mribundles.io.writers import AtomicNibabelWriter

        return AtomicNibabelWriter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
