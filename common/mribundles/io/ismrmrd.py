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

Headers, format constants and the geometry they state live in `mribundles.io.ismrmrd_header`,
writing in `mribundles.io.ismrmrd_write`, prewhitening in `mribundles.io.prewhitening`; this
module is where all of ISMRMRD's public names are imported from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from mribundles.errors import InvalidInputError
from mribundles.io.fastmri_h5 import open_h5
from mribundles.io.ismrmrd_header import GROUP, Scan, is_ismrmrd_h5, read_scan, scan_affine
from mribundles.io.ismrmrd_write import write_ismrmrd
from mribundles.io.prewhitening import noise_covariance, prewhiten
from mribundles.io.validation import as_kspace_tensor, one_line, require_finite

__all__ = [
    "IsmrmrdKspace",
    "is_ismrmrd",
    "is_ismrmrd_h5",
    "ismrmrd_affine",
    "ismrmrd_shape",
    "noise_covariance",
    "prewhiten",
    "read_ismrmrd",
    "read_ismrmrd_noise",
    "write_ismrmrd",
]


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


def is_ismrmrd(path: str | os.PathLike) -> bool:
    """Whether an HDF5 file is ISMRMRD (it has ``dataset/xml``); reads only the file's index.

    Raises InvalidInputError for a missing or unreadable (non-HDF5, truncated) file.
    """
    with open_h5(path) as hf:
        return is_ismrmrd_h5(hf)


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
        scan = read_scan(hf, path)
        slices = range(len(scan.slices)) if slice_index is None else [_slice_position(scan, slice_index, path)]
        wanted = np.isin(scan.heads["idx"]["slice"][scan.image], scan.slices[list(slices)])
        chosen = scan.image[wanted]
        samples = _read_samples(hf, np.sort(np.concatenate([chosen, scan.noise])), path)
    kspace, counts = _assemble(scan, chosen, samples, list(slices), path)
    if remove_os and scan.nx_without_os != scan.nx:
        kspace = _remove_readout_oversampling(kspace, axis=-2, keep=scan.nx_without_os)
    noise = _noise(scan, samples, path)
    affine = scan_affine(scan, remove_os)
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
        return read_scan(hf, Path(path)).shape(remove_os)


def ismrmrd_affine(path: str | os.PathLike, remove_os: bool = False) -> np.ndarray | None:
    """The file's (phase column, readout row, slice) -> RAS affine (module docstring), from the
    headers only; None when its slices are not evenly spaced on one line."""
    with open_h5(path) as hf:
        return scan_affine(read_scan(hf, Path(path)), remove_os)


def read_ismrmrd_noise(path: str | os.PathLike) -> torch.Tensor | None:
    """The noise pre-scan samples (coil, samples) complex64 in file order, or None."""
    path = Path(path)
    with open_h5(path) as hf:
        scan = read_scan(hf, path)
        samples = _read_samples(hf, scan.noise, path)
    return _noise(scan, samples, path)


# --- samples -----------------------------------------------------------------------------------


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


def _samples(scan: Scan, index: int, samples: dict, path: Path) -> np.ndarray:
    """One acquisition's (coil, samples) complex64 data, its length checked against its header."""
    head = scan.heads[index]
    coils, count = int(head["active_channels"]), int(head["number_of_samples"])
    raw = np.asarray(samples[index], dtype=np.float32)
    if raw.size != 2 * coils * count:
        raise InvalidInputError(f"acquisition {index} holds {raw.size // 2} complex samples but its header says "
                                f"{coils} coils x {count} samples", path)
    return raw.view(np.complex64).reshape(coils, count)


def _assemble(scan: Scan, chosen: np.ndarray, samples: dict, slices: list[int], path: Path):
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


def _noise(scan: Scan, samples: dict, path: Path) -> torch.Tensor | None:
    if len(scan.noise) == 0:
        return None
    blocks = [_samples(scan, i, samples, path) for i in scan.noise.tolist()]
    if len({b.shape[0] for b in blocks}) != 1:
        raise InvalidInputError("noise pre-scans have differing coil counts", path)
    noise = np.concatenate(blocks, axis=1)
    require_finite(noise, path, "noise pre-scan")
    return torch.from_numpy(noise.copy())


def _slice_position(scan: Scan, index: int, path: Path) -> int:
    if not -len(scan.slices) <= index < len(scan.slices):
        raise InvalidInputError(f"slice {index} out of range for {len(scan.slices)} slices", path)
    return index % len(scan.slices)
