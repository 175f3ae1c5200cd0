"""Read and write magnitude images with their affine: NIfTI (nibabel); NRRD, MHA/MHD and
DICOM (ITK).

Axis order: arrays are indexed (x, y, z[, component]) as nibabel's ``get_fdata`` returns them
for NIfTI. ITK's numpy view is (z, y, x), so it is reversed here. Affines map (i, j, k, 1)
voxel indices to RAS+ millimetres, as in NIfTI; ITK's LPS geometry is converted the way
MONAI's ``ITKReader`` does (negate the first two rows), so the same file read by nibabel and
by this module gives the same affine.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from mribundles.errors import InvalidInputError
from mribundles.io.atomic import atomic_path
from mribundles.io.validation import one_line, require_finite, to_numpy

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_READ_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".ima")
ITK_WRITE_SUFFIXES = (".nrrd", ".mha")  # single-file formats: one atomic replace suffices
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _suffix(path: Path) -> str:
    """``.nii.gz`` as one suffix, otherwise the last one, lower-cased."""
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def read_image(path: str | os.PathLike) -> tuple[torch.Tensor, np.ndarray]:
    """Read an image and its affine.

    Args:
        path: ``.nii``/``.nii.gz``, ``.nrrd``, ``.mha``/``.mhd``, a DICOM file (``.dcm``) or a
            folder holding one DICOM series.

    Returns:
        (image, affine): float32 tensor indexed (x, y, z[, component]); (4, 4) float64 affine,
        voxel index -> RAS+ mm.

    Raises:
        InvalidInputError: missing, corrupt or unsupported file; NaN or Inf voxels.
    """
    path = Path(path)
    if not path.exists():
        raise InvalidInputError("file not found", path)
    suffix = _suffix(path)
    try:
        if suffix in NIFTI_SUFFIXES:
            array, affine = _read_nifti(path)
        elif path.is_dir() or suffix in ITK_READ_SUFFIXES:
            array, affine = _read_itk(path)
        else:
            raise InvalidInputError(f"unsupported image format '{suffix}'", path)
    except InvalidInputError:
        raise
    except Exception as exc:  # nibabel, zlib and ITK each raise their own types for bad files
        raise InvalidInputError(
            f"cannot read image (corrupt or truncated): {one_line(exc)}", path
        ) from exc
    require_finite(array, path, "image")
    if not np.isfinite(affine).all() or np.linalg.matrix_rank(affine[:3, :3]) < 3:
        raise InvalidInputError("affine is singular or not finite: voxels have no position in space", path)
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)), affine


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(path)
    return img.get_fdata(dtype=np.float32), np.asarray(img.affine, dtype=np.float64)


def _read_itk(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import itk  # heavy import: only when an ITK format is asked for

    img = itk.imread(str(path))  # a folder is read as a DICOM series
    ndim = img.GetImageDimension()
    array = itk.array_from_image(img)  # (z, y, x[, component])
    order = list(range(ndim))[::-1] + list(range(ndim, array.ndim))
    direction = np.asarray(itk.array_from_matrix(img.GetDirection()), dtype=np.float64)
    spacing = np.asarray(img.GetSpacing(), dtype=np.float64)
    origin = np.asarray(img.GetOrigin(), dtype=np.float64)
    array = array.transpose(order)
    # A series folder is read with one more axis than its files have (the stacking axis);
    # for a series of multi-frame files that axis has size 1: drop it, keep (x, y, z).
    while ndim > 3 and array.shape[ndim - 1] == 1:
        array, ndim = array.squeeze(ndim - 1), ndim - 1
    return array, _affine_from_itk(direction, spacing, origin)


def _affine_from_itk(direction: np.ndarray, spacing: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """ITK LPS geometry of a 2D or 3D image -> (4, 4) RAS affine (2D embedded at z = 0)."""
    n = min(len(spacing), 3)
    affine = np.eye(4)
    affine[:n, :n] = direction[:n, :n] @ np.diag(spacing[:n])
    affine[:n, 3] = origin[:n]
    return _LPS_TO_RAS @ affine


def write_image(
    path: str | os.PathLike, array: torch.Tensor | np.ndarray, affine: np.ndarray | torch.Tensor
) -> None:
    """Write an image atomically.

    Args:
        path: ``.nii``/``.nii.gz`` (nibabel) or ``.nrrd``/``.mha`` (ITK).
        array: real, (x, y[, z]) (NIfTI also takes more axes); its dtype is kept
            (bool becomes uint8).
        affine: (4, 4) voxel index -> RAS+ mm. ITK stores spacing and an orthonormal
            direction, so a sheared affine is only kept exactly by NIfTI.
    """
    path = Path(path)
    array = to_numpy(array)
    affine = np.asarray(to_numpy(affine), dtype=np.float64)
    if np.iscomplexobj(array):
        raise InvalidInputError("image is complex; write its magnitude", path)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if affine.shape != (4, 4):
        raise InvalidInputError(f"affine has shape {affine.shape}; expected (4, 4)", path)
    require_finite(affine, path, "affine")
    require_finite(array, path, "image")
    suffix = _suffix(path)
    if suffix in NIFTI_SUFFIXES:
        img = nib.Nifti1Image(array, affine)
        # Both forms coded 1 (scanner), as MONAI's NibabelWriter does, so ITK reads the same.
        img.set_sform(affine, code=1)
        img.set_qform(affine, code=1)
        with atomic_path(path) as tmp:
            nib.save(img, tmp)
    elif suffix in ITK_WRITE_SUFFIXES:
        _write_itk(path, array, affine)
    else:
        raise InvalidInputError(
            f"unsupported image format '{suffix}' (expected .nii, .nii.gz, .nrrd or .mha)", path
        )


def _write_itk(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    import itk

    n = array.ndim
    if n not in (2, 3):
        raise InvalidInputError(f"ITK formats take 2D or 3D images, got shape {array.shape}", path)
    lps = (_LPS_TO_RAS @ affine)[:n]  # the inverse of the LPS->RAS flip is itself
    spacing = np.linalg.norm(lps[:, :n], axis=0)
    if np.any(spacing == 0):
        raise InvalidInputError("affine has a zero-length voxel axis", path)
    img = itk.image_from_array(np.ascontiguousarray(array.transpose()))  # ITK wants (z, y, x)
    img.SetSpacing(spacing.tolist())
    img.SetOrigin(lps[:, 3].tolist())
    img.SetDirection(itk.matrix_from_array(np.ascontiguousarray(lps[:, :n] / spacing)))
    with atomic_path(path) as tmp:
        itk.imwrite(img, str(tmp))
