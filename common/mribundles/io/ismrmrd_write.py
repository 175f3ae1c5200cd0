"""Write k-space as ISMRMRD raw data in HDF5: an XML header (``dataset/xml``) and one record
per noise block and per acquired line (``dataset/data``), which `mribundles.io.ismrmrd`'s
``read_ismrmrd`` reads back. The geometry convention is that reader's docstring's."""

from __future__ import annotations

import os

import h5py
import numpy as np
import torch

from mribundles.errors import InvalidInputError
from mribundles.io.atomic import atomic_path
from mribundles.io.ismrmrd_header import GROUP, LPS_TO_RAS, acquisition_flags
from mribundles.io.validation import as_kspace_tensor, require_finite, to_numpy

_NOISE_CHUNK = 1024  # samples per noise acquisition written (number_of_samples is 16-bit)


def write_ismrmrd(
    path: str | os.PathLike,
    kspace: torch.Tensor | np.ndarray,
    mask: torch.Tensor | np.ndarray | None = None,
    affine: np.ndarray | None = None,
    noise: torch.Tensor | np.ndarray | None = None,
    readout_oversampling: float = 1.0,
    h1_frequency_hz: int = 127_728_000,
) -> None:
    """Write k-space as an ISMRMRD file atomically; ``read_ismrmrd`` gives it back.

    Args:
        path: destination ``.h5``.
        kspace: complex (coil, readout, phase-encode) or (slice, coil, readout, phase-encode).
        mask: bool (phase-encode,) or (slice, phase-encode): the lines to write (the others are
            not acquisitions and read back as zeros). Default: every line with a non-zero sample.
        affine: (4, 4) voxel (phase column, readout row, slice) -> RAS mm (`io.ismrmrd`'s docstring);
            default the identity (1 mm pixels and slices).
        noise: (coil, samples) complex noise pre-scan, written first, flagged
            ``ACQ_IS_NOISE_MEASUREMENT``.
        readout_oversampling: encoded over reconstructed readout field of view, for the header
            (``read_ismrmrd(remove_os=True)`` removes it).
        h1_frequency_hz: the header's required proton frequency (default 3 T).
    """
    volume = as_kspace_tensor(to_numpy(kspace), path).numpy()
    volume = volume[None] if volume.ndim == 3 else volume
    lines = _lines_to_write(volume, mask, path)
    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    geometry = _geometry(affine, volume.shape, path)
    noise_array = None if noise is None else _noise_to_write(noise, volume.shape[1], path)
    header = _header(volume.shape, geometry["fov"], float(readout_oversampling), h1_frequency_hz)
    records = _records(volume, lines, geometry, noise_array)
    import ismrmrd.hdf5

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as hf:
        group = hf.create_group(GROUP)
        group.create_dataset("xml", shape=(1,), dtype=h5py.special_dtype(vlen=bytes), data=[header.encode("utf-8")])
        group.create_dataset("data", data=records, maxshape=(None,), dtype=ismrmrd.hdf5.acquisition_dtype,
                             chunks=(min(len(records), 256),))


def _lines_to_write(volume: np.ndarray, mask, path) -> np.ndarray:
    """bool (slice, ny) of the lines to write."""
    slices, ny = volume.shape[0], volume.shape[-1]
    if mask is None:
        return (volume != 0).any(axis=(1, 2))
    mask = np.asarray(to_numpy(mask)).astype(bool)
    if mask.shape not in ((ny,), (slices, ny)):
        raise InvalidInputError(f"mask shape {mask.shape} fits neither ({ny},) nor ({slices}, {ny})", path)
    return np.broadcast_to(mask, (slices, ny))


def _geometry(affine: np.ndarray, shape: tuple, path) -> dict:
    """Affine -> LPS directions, per-slice centre positions and the encoded field of view."""
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise InvalidInputError(f"affine must be a finite 4x4 matrix, got shape {affine.shape}", path)
    slices, _, nx, ny = shape
    axes = affine[:3, :3]
    sizes = np.linalg.norm(axes, axis=0)
    if (sizes == 0).any():
        raise InvalidInputError("affine has a zero-length axis", path)
    units = axes / sizes
    if np.abs(units.T @ units - np.eye(3)).max() > 1e-4:
        raise InvalidInputError("affine axes are not orthogonal: ISMRMRD needs orthogonal read/phase/slice directions", path)
    to_lps = LPS_TO_RAS  # its own inverse
    centres = [affine @ np.array([ny // 2, nx // 2, k, 1.0]) for k in range(slices)]
    return {
        "phase_dir": to_lps @ units[:, 0], "read_dir": to_lps @ units[:, 1], "slice_dir": to_lps @ units[:, 2],
        "positions": [to_lps @ c[:3] for c in centres],
        "fov": (sizes[1] * nx, sizes[0] * ny, sizes[2]),
    }


def _noise_to_write(noise, coils: int, path) -> np.ndarray:
    noise = np.asarray(to_numpy(noise))
    if not np.iscomplexobj(noise) or noise.ndim != 2 or noise.shape[0] != coils or noise.shape[1] == 0:
        raise InvalidInputError(f"noise must be complex (coil={coils}, samples), got {noise.dtype} {noise.shape}", path)
    require_finite(noise, path, "noise")
    return noise.astype(np.complex64)


def _header(shape: tuple, fov: tuple, oversampling: float, h1_frequency_hz: int) -> str:
    import ismrmrd.xsd as x

    slices, coils, nx, ny = shape
    if not oversampling >= 1:
        raise InvalidInputError(f"readout_oversampling must be >= 1, got {oversampling}")
    recon_x = max(1, int(round(nx / oversampling)))

    def space(matrix_x, fov_x):
        return x.encodingSpaceType(matrixSize=x.matrixSizeType(x=matrix_x, y=ny, z=1),
                                   fieldOfView_mm=x.fieldOfViewMm(x=float(fov_x), y=float(fov[1]), z=float(fov[2])))

    encoding = x.encodingType(
        encodedSpace=space(nx, fov[0]), reconSpace=space(recon_x, fov[0] / oversampling),
        encodingLimits=x.encodingLimitsType(
            kspace_encoding_step_0=x.limitType(minimum=0, maximum=nx - 1, center=nx // 2),
            kspace_encoding_step_1=x.limitType(minimum=0, maximum=ny - 1, center=ny // 2),
            kspace_encoding_step_2=x.limitType(minimum=0, maximum=0, center=0),
            slice=x.limitType(minimum=0, maximum=slices - 1, center=0)),
        trajectory=x.trajectoryType.CARTESIAN)
    header = x.ismrmrdHeader(
        experimentalConditions=x.experimentalConditionsType(H1resonanceFrequency_Hz=int(h1_frequency_hz)),
        acquisitionSystemInformation=x.acquisitionSystemInformationType(receiverChannels=coils),
        encoding=[encoding])
    return x.ToXML(header, encoding="utf-8")


def _records(volume: np.ndarray, lines: np.ndarray, geometry: dict, noise: np.ndarray | None) -> np.ndarray:
    """One ISMRMRD acquisition record per noise block and per written line, in that order."""
    import ismrmrd.hdf5

    flags = acquisition_flags()
    slices, coils, nx, ny = volume.shape
    noise_blocks = [] if noise is None else [noise[:, i:i + _NOISE_CHUNK] for i in range(0, noise.shape[1], _NOISE_CHUNK)]
    slice_of, line_of = np.nonzero(lines)  # the written lines, slice by slice
    first, total = len(noise_blocks), len(noise_blocks) + len(slice_of)
    heads = np.zeros(total, dtype=ismrmrd.hdf5.acquisition_header_dtype)
    heads["version"] = 1
    heads["scan_counter"] = np.arange(total)
    heads["available_channels"] = heads["active_channels"] = coils
    for coil in range(coils):  # coil c is bit c % 64 of word c // 64
        heads["channel_mask"][:, coil // 64] |= np.uint64(1 << (coil % 64))
    heads["number_of_samples"][:first] = [block.shape[1] for block in noise_blocks]
    heads["flags"][:first] = flags["noise"]
    image = slice(first, total)
    heads["number_of_samples"][image], heads["center_sample"][image] = nx, nx // 2
    heads["idx"]["kspace_encode_step_1"][image], heads["idx"]["slice"][image] = line_of, slice_of
    for name in ("read_dir", "phase_dir", "slice_dir"):
        heads[name][image] = geometry[name]
    heads["position"][image] = np.asarray(geometry["positions"])[slice_of]
    if total > first:
        heads["flags"][-1] |= flags["last"]
    records = np.zeros(total, dtype=ismrmrd.hdf5.acquisition_dtype)
    records["head"] = heads
    samples = noise_blocks + [volume[s, :, :, y] for s, y in zip(slice_of.tolist(), line_of.tolist())]
    for i, block in enumerate(samples):  # (coil, samples) complex64 -> interleaved float32, as ismrmrd stores it
        records["data"][i] = np.ascontiguousarray(block, dtype=np.complex64).view(np.float32).ravel()
        records["traj"][i] = np.zeros(0, np.float32)
    return records
