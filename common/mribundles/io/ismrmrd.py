"""ISMRMRD raw data in HDF5 (the community's raw format), read and written through the ismrmrd
package: an XML header (``dataset/xml``) and one record per readout (``dataset/data``).

Reading sorts the acquisitions into fastMRI's layout, (slice, coil, readout, phase-encode):

- image acquisitions only: noise pre-scans (``ACQ_IS_NOISE_MEASUREMENT``) are set aside as
  ``noise`` (coil, samples), for prewhitening (`prewhiten`); separate parallel-imaging
  calibration scans, navigators, phase-correction, feedback, dummy and phase-stabilisation
  readouts are left out (as twixtools' ``image`` category leaves them out of a twix file);
- each readout lands on the header's encoded matrix: its ``center_sample`` on readout index
  ``nx // 2`` (after ``discard_pre``/``discard_post`` samples are dropped), its line
  (``kspace_encode_step_1``) on phase index ``line - center + ny // 2``, with the centre from
  ``encodingLimits/kspace_encoding_step_1``; repeated averages of a line are averaged, and lines
  never acquired stay zero (``mask`` says which lines were);
- slices are the distinct slice counters, in increasing order;
- the readout keeps its oversampling unless ``remove_os`` asks, as for twix files
  (`mribundles.io.twix`): the oversampling factor is the encoded over the reconstructed
  readout field of view of the header, and removal keeps the centre of the readout's image.

Only 2D (multi-slice) Cartesian data is read: 3D encoding, non-Cartesian trajectories,
reversed (bipolar/EPI) readouts and several contrasts/phases/repetitions/sets are refused.

Geometry (``affine``): the 4x4 map from voxel (i, j, k) to RAS millimetres, where i is the
phase-encode column (the last k-space axis), j the readout row and k the slice: the convention of
`mribundles.chains.kspace_affine` and of the ``affine`` attribute of this library's fastMRI files,
(column, row, slice) of the image that ``physics.ifft2c`` makes of one slice. Column i steps along
``phase_dir``, row j along ``read_dir`` (pixel sizes: encoded field of view over encoded matrix),
slice k from one slice's ``position`` to the next (one slice: ``slice_dir`` times the encoded
field of view's z, the slice thickness). Pixel (ny // 2, nx // 2) of slice k is at that slice's
``position``. ISMRMRD's patient coordinates are LPS (DICOM's); x and y are negated for RAS.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from mribundles.errors import InvalidInputError
from mribundles.io.atomic import atomic_path
from mribundles.io.fastmri_h5 import open_h5
from mribundles.io.validation import as_kspace_tensor, one_line, require_finite, to_numpy

GROUP = "dataset"
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
# Counters whose values must all be 0: one 2D contrast, cardiac phase, repetition and set.
_SINGLE_COUNTERS = ("kspace_encode_step_2", "contrast", "phase", "repetition", "set")
_NOISE_CHUNK = 1024  # samples per noise acquisition written (number_of_samples is 16-bit)


def _bit(flag: int) -> int:
    return 1 << (flag - 1)  # ISMRMRD flags are numbered from 1


def _flags():
    import ismrmrd

    not_image = [ismrmrd.ACQ_IS_NOISE_MEASUREMENT, ismrmrd.ACQ_IS_NAVIGATION_DATA, ismrmrd.ACQ_IS_PHASECORR_DATA,
                 ismrmrd.ACQ_IS_HPFEEDBACK_DATA, ismrmrd.ACQ_IS_DUMMYSCAN_DATA, ismrmrd.ACQ_IS_RTFEEDBACK_DATA,
                 ismrmrd.ACQ_IS_SURFACECOILCORRECTIONSCAN_DATA, ismrmrd.ACQ_IS_PHASE_STABILIZATION_REFERENCE,
                 ismrmrd.ACQ_IS_PHASE_STABILIZATION]
    return {
        "noise": _bit(ismrmrd.ACQ_IS_NOISE_MEASUREMENT),
        "not_image": sum(_bit(f) for f in not_image),
        "calibration": _bit(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION),
        "calibration_and_imaging": _bit(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING),
        "reverse": _bit(ismrmrd.ACQ_IS_REVERSE),
        "last": _bit(ismrmrd.ACQ_LAST_IN_MEASUREMENT),
    }


@dataclass
class IsmrmrdKspace:
    """One ISMRMRD file in memory.

    Attributes:
        kspace: (slice, coil, readout, phase-encode) complex64; (coil, readout, phase-encode)
            when one slice was asked for.
        mask: bool (slice, phase-encode) (or (phase-encode,)): True where a line was acquired.
        noise: (coil, samples) complex64, every noise pre-scan sample in file order, or None.
        affine: float64 (4, 4), voxel (phase column, readout row, slice) -> RAS mm (see the
            module docstring), or None when the slices do not lie evenly spaced on one line.
        header: the ISMRMRD XML text.
        dwell_us, noise_dwell_us: sample times of the image and noise readouts (0 if unknown).
    """

    kspace: torch.Tensor
    mask: torch.Tensor
    noise: torch.Tensor | None
    affine: np.ndarray | None
    header: str
    dwell_us: float = 0.0
    noise_dwell_us: float = 0.0

    def prewhitened(self) -> torch.Tensor:
        """``kspace`` with its coils prewhitened by ``noise`` (`prewhiten`), the noise variance
        scaled from the noise readouts' bandwidth to the image readouts'."""
        if self.noise is None:
            raise InvalidInputError("no noise pre-scan (ACQ_IS_NOISE_MEASUREMENT) to prewhiten with")
        ratio = self.noise_dwell_us / self.dwell_us if self.dwell_us > 0 and self.noise_dwell_us > 0 else 1.0
        return prewhiten(self.kspace, self.noise, ratio)


@dataclass(frozen=True)
class _Scan:
    """What the header and the acquisition headers say, before any sample is read."""

    header: str
    heads: np.ndarray  # every acquisition header (ismrmrd's acquisition header dtype)
    image: np.ndarray  # indices of the image acquisitions (encoding 0), in file order
    noise: np.ndarray  # indices of the noise acquisitions
    slices: np.ndarray  # distinct slice counters of the image acquisitions, sorted
    coils: int
    nx: int  # encoded readout samples (with oversampling)
    ny: int  # encoded phase-encode lines
    nx_without_os: int  # readout samples once the oversampling is removed
    center_line: int
    fov_mm: tuple[float, float, float]  # encoded field of view x (readout), y (phase), z

    def readout_size(self, remove_os: bool) -> int:
        return self.nx_without_os if remove_os else self.nx

    def shape(self, remove_os: bool) -> tuple[int, int, int, int]:
        return (len(self.slices), self.coils, self.readout_size(remove_os), self.ny)


def is_ismrmrd(path: str | os.PathLike) -> bool:
    """Whether an HDF5 file is ISMRMRD (it has ``dataset/xml``); reads only the file's index.

    Raises InvalidInputError for a missing or unreadable (non-HDF5, truncated) file.
    """
    with open_h5(path) as hf:
        return is_ismrmrd_h5(hf)


def is_ismrmrd_h5(hf: h5py.File) -> bool:
    """Whether an open HDF5 file is ISMRMRD raw data (not a fastMRI file): its ``dataset/xml``."""
    return isinstance(hf.get(GROUP), h5py.Group) and "xml" in hf[GROUP]


def read_ismrmrd(path: str | os.PathLike, remove_os: bool = False, slice_index: int | None = None) -> IsmrmrdKspace:
    """Read and validate an ISMRMRD file (see the module docstring for what goes where).

    Args:
        path: the ``.h5`` file.
        remove_os: remove the readout oversampling that the header states.
        slice_index: read only this slice's readouts, giving (coil, readout, phase-encode)
            k-space and a (phase-encode,) mask.

    Returns:
        `IsmrmrdKspace`.

    Raises:
        InvalidInputError: missing, truncated or corrupt file; not ISMRMRD; malformed header;
            no image acquisitions; data that is not 2D Cartesian; NaN or Inf.
    """
    path = Path(path)
    with open_h5(path) as hf:
        scan = _scan(hf, path)
        slices = range(len(scan.slices)) if slice_index is None else [_slice_position(scan, slice_index, path)]
        wanted = np.isin(scan.heads["idx"]["slice"][scan.image], scan.slices[list(slices)])
        chosen = scan.image[wanted]
        samples = _read_samples(hf, np.sort(np.concatenate([chosen, scan.noise])), path)
    kspace, counts = _assemble(scan, chosen, samples, list(slices), path)
    if remove_os and scan.nx_without_os != scan.nx:
        kspace = _remove_readout_oversampling(kspace, axis=-2, keep=scan.nx_without_os)
    noise = _noise(scan, samples, path)
    affine = _affine(scan, remove_os)
    mask = counts > 0
    if slice_index is not None:
        kspace, mask = kspace[0], mask[0]
    image_dwell = float(scan.heads["sample_time_us"][scan.image[0]])
    noise_dwell = float(scan.heads["sample_time_us"][scan.noise[0]]) if len(scan.noise) else 0.0
    return IsmrmrdKspace(as_kspace_tensor(kspace, path), torch.from_numpy(mask), noise, affine, scan.header,
                         image_dwell, noise_dwell)


def ismrmrd_shape(path: str | os.PathLike, remove_os: bool = False) -> tuple[int, int, int, int]:
    """(slice, coil, readout, phase-encode) of ``read_ismrmrd``, from the headers only."""
    with open_h5(path) as hf:
        return _scan(hf, Path(path)).shape(remove_os)


def ismrmrd_affine(path: str | os.PathLike, remove_os: bool = False) -> np.ndarray | None:
    """The file's (phase column, readout row, slice) -> RAS affine (module docstring), from the
    headers only; None when its slices are not evenly spaced on one line."""
    with open_h5(path) as hf:
        return _affine(_scan(hf, Path(path)), remove_os)


def read_ismrmrd_noise(path: str | os.PathLike) -> torch.Tensor | None:
    """The noise pre-scan samples (coil, samples) complex64 in file order, or None."""
    path = Path(path)
    with open_h5(path) as hf:
        scan = _scan(hf, path)
        samples = _read_samples(hf, scan.noise, path)
    return _noise(scan, samples, path)


# --- prewhitening -----------------------------------------------------------------------------


def noise_covariance(noise: torch.Tensor) -> torch.Tensor:
    """(coil, samples) complex noise -> (coil, coil) sample covariance N N^H / (samples - 1)."""
    noise = torch.as_tensor(noise).to(torch.complex128)
    centred = noise - noise.mean(dim=1, keepdim=True)
    return centred @ centred.conj().T / max(noise.shape[1] - 1, 1)


def prewhiten(kspace: torch.Tensor, noise: torch.Tensor, variance_ratio: float = 1.0) -> torch.Tensor:
    """Decorrelate the coils: L^-1 k, where L L^H is the noise covariance (Cholesky).

    Args:
        kspace: complex (coil, ...) or (slice, coil, readout, phase-encode).
        noise: (coil, samples) noise pre-scan of the same coils.
        variance_ratio: noise variance of the data over that of the noise scan (the noise
            readouts' dwell time over the image readouts' when their bandwidths differ).

    Returns:
        complex64 tensor of ``kspace``'s shape whose noise has unit variance, uncorrelated.
    """
    kspace = torch.as_tensor(kspace)
    coil_axis = 1 if kspace.ndim == 4 else 0
    if noise.shape[0] != kspace.shape[coil_axis]:
        raise InvalidInputError(f"noise has {noise.shape[0]} coils but k-space has {kspace.shape[coil_axis]}")
    covariance = noise_covariance(noise) * float(variance_ratio)
    factor, info = torch.linalg.cholesky_ex(covariance)
    if int(info) != 0:
        raise InvalidInputError("the noise covariance is not positive definite (a dead or duplicated coil?)")
    coils_first = kspace.movedim(coil_axis, 0).to(torch.complex128)
    flat = coils_first.reshape(coils_first.shape[0], -1)
    white = torch.linalg.solve_triangular(factor, flat, upper=False)
    return white.reshape(coils_first.shape).movedim(0, coil_axis).to(torch.complex64)


# --- reading ------------------------------------------------------------------------------------


def _text(value) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _scan(hf: h5py.File, path: Path) -> _Scan:
    if not is_ismrmrd_h5(hf):
        raise InvalidInputError(f"not an ISMRMRD file: no '{GROUP}/xml' header (entries: {sorted(hf.keys())})", path)
    group = hf[GROUP]
    header = _text(group["xml"][0])
    encoding = _encoding(header, path)
    if "data" not in group:
        raise InvalidInputError("ISMRMRD file has no acquisitions ('dataset/data' is missing)", path)
    heads = _acquisition_headers(group["data"], path)
    flags = _flags()
    bits = heads["flags"].astype(np.uint64)
    noise = np.flatnonzero(bits & np.uint64(flags["noise"]))
    calibration_only = (bits & np.uint64(flags["calibration"]) != 0) & (bits & np.uint64(flags["calibration_and_imaging"]) == 0)
    image = np.flatnonzero((bits & np.uint64(flags["not_image"]) == 0) & ~calibration_only & (heads["encoding_space_ref"] == 0))
    if len(image) == 0:
        raise InvalidInputError(f"no image acquisitions among the file's {len(heads)} ({len(noise)} noise pre-scans)", path)
    _check_image_acquisitions(heads[image], flags, path)
    enc, rec = encoding.encodedSpace, encoding.reconSpace
    nx, ny = int(enc.matrixSize.x), int(enc.matrixSize.y)
    ratio = float(enc.fieldOfView_mm.x) / float(rec.fieldOfView_mm.x) if rec.fieldOfView_mm.x else 1.0
    limit = encoding.encodingLimits.kspace_encoding_step_1
    return _Scan(
        header=header, heads=heads, image=image, noise=noise,
        slices=np.unique(heads["idx"]["slice"][image]),
        coils=int(heads["active_channels"][image[0]]),
        nx=nx, ny=ny, nx_without_os=max(1, int(round(nx / ratio))) if ratio > 1 else nx,
        center_line=int(limit.center) if limit is not None else ny // 2,
        fov_mm=(float(enc.fieldOfView_mm.x), float(enc.fieldOfView_mm.y), float(enc.fieldOfView_mm.z)),
    )


def _acquisition_headers(data: h5py.Dataset, path: Path) -> np.ndarray:
    """Every acquisition's header, without its samples (they live elsewhere in the file)."""
    import ismrmrd.hdf5

    names = data.dtype.names or ()
    needed = set(ismrmrd.hdf5.acquisition_header_dtype.names)
    if not {"head", "data"} <= set(names) or not needed <= set(data.dtype["head"].names or ()):
        raise InvalidInputError(f"'{GROUP}/data' is not a table of ISMRMRD acquisitions (dtype {data.dtype})", path)
    return data.fields("head")[:]


def _encoding(header: str, path: Path):
    """The first encoding of the XML header; refuses what is not 2D Cartesian."""
    import ismrmrd.xsd

    try:
        parsed = ismrmrd.xsd.CreateFromDocument(header)
    except Exception as exc:  # noqa: BLE001 - the XML parser raises many types on bad text
        raise InvalidInputError(f"malformed ISMRMRD XML header: {type(exc).__name__}: {one_line(exc)}", path) from exc
    if not parsed.encoding:
        raise InvalidInputError("ISMRMRD header has no <encoding>", path)
    encoding = parsed.encoding[0]
    trajectory = getattr(encoding.trajectory, "value", encoding.trajectory)
    if trajectory != "cartesian":
        raise InvalidInputError(f"ISMRMRD trajectory '{trajectory}' is not Cartesian; only Cartesian k-space is read", path)
    size = encoding.encodedSpace.matrixSize
    if int(size.z) > 1:
        raise InvalidInputError(f"3D encoding (encoded matrix z = {size.z}); only 2D multi-slice k-space is read", path)
    if int(size.x) < 1 or int(size.y) < 1:
        raise InvalidInputError(f"ISMRMRD encoded matrix {size.x}x{size.y} is empty", path)
    return encoding


def _check_image_acquisitions(heads: np.ndarray, flags: dict, path: Path) -> None:
    for name in _SINGLE_COUNTERS:
        values = np.unique(heads["idx"][name])
        if values.max() > 0:
            raise InvalidInputError(f"image acquisitions have {len(values)} values of counter '{name}'; only one "
                                    "2D contrast, phase, repetition and set is read", path)
    if (heads["flags"].astype(np.uint64) & np.uint64(flags["reverse"])).any():
        raise InvalidInputError("reversed readouts (ACQ_IS_REVERSE: bipolar or EPI) are not supported", path)
    if (heads["trajectory_dimensions"] > 0).any():
        raise InvalidInputError("image acquisitions carry a trajectory: not Cartesian k-space", path)
    coils = np.unique(heads["active_channels"])
    if len(coils) != 1 or coils[0] == 0:
        raise InvalidInputError(f"image acquisitions have differing or zero coil counts {coils.tolist()}", path)


def _read_samples(hf: h5py.File, indices: np.ndarray, path: Path) -> dict[int, np.ndarray]:
    """{acquisition index: float32 samples} of the given acquisitions (read in one pass)."""
    if len(indices) == 0:
        return {}
    try:
        # h5py reads a sorted index list of one field without the rest of the records.
        data = hf[GROUP]["data"].fields("data")[np.asarray(indices).tolist()]
    except (OSError, ValueError, TypeError) as exc:
        raise InvalidInputError(f"corrupt ISMRMRD acquisition data: {one_line(exc)}", path) from exc
    return dict(zip(np.asarray(indices).tolist(), data))


def _samples(scan: _Scan, index: int, samples: dict, path: Path) -> np.ndarray:
    """One acquisition's (coil, samples) complex64 data, its length checked against its header."""
    head = scan.heads[index]
    coils, count = int(head["active_channels"]), int(head["number_of_samples"])
    raw = np.asarray(samples[index], dtype=np.float32)
    if raw.size != 2 * coils * count:
        raise InvalidInputError(f"acquisition {index} holds {raw.size // 2} complex samples but its header says "
                                f"{coils} coils x {count} samples", path)
    return raw.view(np.complex64).reshape(coils, count)


def _assemble(scan: _Scan, chosen: np.ndarray, samples: dict, slices: list[int], path: Path):
    """Place the chosen readouts: -> (slice, coil, nx, ny) k-space and (slice, ny) line counts."""
    kspace = np.zeros((len(slices), scan.coils, scan.nx, scan.ny), np.complex64)
    counts = np.zeros((len(slices), scan.ny), np.int64)
    row_of_slice = {int(scan.slices[s]): row for row, s in enumerate(slices)}
    for index in chosen.tolist():
        head = scan.heads[index]
        data = _samples(scan, index, samples, path)
        pre, post = int(head["discard_pre"]), int(head["discard_post"])
        data = data[:, pre:data.shape[1] - post]
        start = scan.nx // 2 - (int(head["center_sample"]) - pre)
        line = int(head["idx"]["kspace_encode_step_1"]) - scan.center_line + scan.ny // 2
        if start < 0 or start + data.shape[1] > scan.nx or not 0 <= line < scan.ny:
            raise InvalidInputError(f"acquisition {index} (line {head['idx']['kspace_encode_step_1']}, "
                                    f"{data.shape[1]} samples, centre {head['center_sample']}) falls outside the "
                                    f"encoded {scan.nx}x{scan.ny} matrix", path)
        row = row_of_slice[int(head["idx"]["slice"])]
        kspace[row, :, start:start + data.shape[1], line] += data
        counts[row, line] += 1
    # Repeated averages of a line: their mean (twixtools averages twix averages the same way).
    kspace /= np.maximum(counts, 1)[:, None, None, :]
    require_finite(kspace, path, "k-space")
    return kspace, counts


def _remove_readout_oversampling(kspace: np.ndarray, axis: int, keep: int) -> np.ndarray:
    """Keep the centre ``keep`` pixels of the readout's image: (..., nx, ...) -> (..., keep, ...).

    The same operation as twixtools' ``remove_os`` (numpy's centred FFTs with their default
    scaling, the crop starting at nx // 2 - keep // 2), so twix and ISMRMRD files agree.
    """
    n = kspace.shape[axis]
    image = np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(kspace, axes=axis), axis=axis), axes=axis)
    start = n // 2 - keep // 2
    image = np.take(image, np.arange(start, start + keep), axis=axis)
    return np.fft.fftshift(np.fft.fft(np.fft.ifftshift(image, axes=axis), axis=axis), axes=axis).astype(np.complex64)


def _noise(scan: _Scan, samples: dict, path: Path) -> torch.Tensor | None:
    if len(scan.noise) == 0:
        return None
    blocks = [_samples(scan, i, samples, path) for i in scan.noise.tolist()]
    if len({b.shape[0] for b in blocks}) != 1:
        raise InvalidInputError("noise pre-scans have differing coil counts", path)
    noise = np.concatenate(blocks, axis=1)
    require_finite(noise, path, "noise pre-scan")
    return torch.from_numpy(noise.copy())


def _slice_position(scan: _Scan, index: int, path: Path) -> int:
    if not -len(scan.slices) <= index < len(scan.slices):
        raise InvalidInputError(f"slice {index} out of range for {len(scan.slices)} slices", path)
    return index % len(scan.slices)


def _affine(scan: _Scan, remove_os: bool) -> np.ndarray | None:
    """(phase column, readout row, slice) -> RAS mm from each slice's first image readout."""
    slice_counters = scan.heads["idx"]["slice"][scan.image]
    first = [scan.image[np.flatnonzero(slice_counters == s)[0]] for s in scan.slices]
    heads = scan.heads[first]
    directions = [heads[name].astype(np.float64) for name in ("phase_dir", "read_dir", "slice_dir")]
    if any(not np.allclose(d, d[0], atol=1e-4) for d in directions):
        return None  # slices of different orientations: no one affine
    phase_dir, read_dir, slice_dir = (_LPS_TO_RAS @ d[0] for d in directions)
    positions = heads["position"].astype(np.float64) @ _LPS_TO_RAS.T
    nx = scan.readout_size(remove_os)
    column = phase_dir * scan.fov_mm[1] / scan.ny
    row = read_dir * scan.fov_mm[0] / scan.nx  # the pixel size: removing oversampling narrows the FOV
    if len(positions) > 1:
        step = (positions[-1] - positions[0]) / (len(positions) - 1)
        if not np.allclose(positions, positions[0] + np.arange(len(positions))[:, None] * step, atol=1e-2):
            return None  # unevenly spaced slices
    else:
        step = slice_dir * scan.fov_mm[2]
    affine = np.eye(4)
    affine[:3, :3] = np.stack([column, row, step], axis=1)
    affine[:3, 3] = positions[0] - (scan.ny // 2) * column - (nx // 2) * row
    return affine


# --- writing ------------------------------------------------------------------------------------


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
        affine: (4, 4) voxel (phase column, readout row, slice) -> RAS mm (module docstring);
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
    to_lps = _LPS_TO_RAS  # its own inverse
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

    flags = _flags()
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
