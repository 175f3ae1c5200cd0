"""What an ISMRMRD file's headers say, before any sample is read: the format's constants and
acquisition flags, the XML header's encoding, the acquisition headers sorted into image and noise
readouts (`Scan`), and the voxel -> RAS geometry they state (`scan_affine`).

Shared by the reader (`mribundles.io.ismrmrd`, whose docstring states what is read and the
geometry convention) and the writer (`mribundles.io.ismrmrd_write`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from mribundles.errors import InvalidInputError
from mribundles.io.validation import one_line

GROUP = "dataset"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])  # its own inverse: also RAS -> LPS
# Counters whose values must all be 0: one 2D contrast, cardiac phase, repetition and set.
_SINGLE_COUNTERS = ("kspace_encode_step_2", "contrast", "phase", "repetition", "set")


def _bit(flag: int) -> int:
    return 1 << (flag - 1)  # ISMRMRD flags are numbered from 1


def acquisition_flags() -> dict[str, int]:
    """The acquisition header bits the reader and the writer use, by role."""
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


@dataclass(frozen=True)
class Scan:
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


def is_ismrmrd_h5(hf: h5py.File) -> bool:
    """Whether an open HDF5 file is ISMRMRD raw data (not a fastMRI file): its ``dataset/xml``."""
    return isinstance(hf.get(GROUP), h5py.Group) and "xml" in hf[GROUP]


def _text(value) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def read_scan(hf: h5py.File, path: Path) -> Scan:
    """Parse and validate an open ISMRMRD file's headers (`path` names it in errors)."""
    if not is_ismrmrd_h5(hf):
        raise InvalidInputError(f"not an ISMRMRD file: no '{GROUP}/xml' header (entries: {sorted(hf.keys())})", path)
    group = hf[GROUP]
    header = _text(group["xml"][0])
    encoding = _encoding(header, path)
    if "data" not in group:
        raise InvalidInputError("ISMRMRD file has no acquisitions ('dataset/data' is missing)", path)
    heads = _acquisition_headers(group["data"], path)
    flags = acquisition_flags()
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
    return Scan(
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


def scan_affine(scan: Scan, remove_os: bool) -> np.ndarray | None:
    """(phase column, readout row, slice) -> RAS mm from each slice's first image readout;
    None when the slices differ in orientation or are unevenly spaced."""
    slice_counters = scan.heads["idx"]["slice"][scan.image]
    first = [scan.image[np.flatnonzero(slice_counters == s)[0]] for s in scan.slices]
    heads = scan.heads[first]
    directions = [heads[name].astype(np.float64) for name in ("phase_dir", "read_dir", "slice_dir")]
    if any(not np.allclose(d, d[0], atol=1e-4) for d in directions):
        return None  # slices of different orientations: no one affine
    phase_dir, read_dir, slice_dir = (LPS_TO_RAS @ d[0] for d in directions)
    positions = heads["position"].astype(np.float64) @ LPS_TO_RAS.T
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
