"""Siemens twix raw data (``.dat``, VB and VD/VE) through twixtools.

The image scan of the file's last measurement (earlier measurements of a multi-raid file are
adjustment scans) becomes k-space in fastMRI's layout: (coil, readout, phase-encode) for one
slice, (slice, coil, readout, phase-encode) for several, so 1D masks on the last axis choose
phase-encode lines. Lines sit at their line counters and repeated averages are averaged, as
twixtools does by default; lines that were not acquired stay zero. The readout keeps its
oversampling (as fastMRI's files do) unless ``remove_os`` asks twixtools to remove it (the
readout then has half the samples: the centre half of the readout field of view).

Only 2D (multi-slice) Cartesian data is read: a scan with partitions (3D), echoes,
repetitions, sets, phases or other counters is refused rather than silently cut to one of them.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import torch

from mribundles.errors import InvalidInputError
from mribundles.io.validation import as_kspace_tensor, one_line, require_file

TWIX_SUFFIXES = (".dat",)
# twixtools' dimensions kept in the output; any other one must have size 1.
_KEPT = ("Sli", "Lin", "Cha", "Col")


def read_twix(path: str | os.PathLike, remove_os: bool = False, slice_index: int | None = None) -> torch.Tensor:
    """Read and validate the image k-space of a twix file.

    Args:
        path: the ``.dat`` file.
        remove_os: remove the readout's 2x oversampling (twixtools' ``remove_os``).
        slice_index: read only this slice (from disk), giving (coil, readout, phase-encode).

    Returns:
        complex64 tensor: (coil, readout, phase-encode) for a one-slice scan or a
        ``slice_index``, else (slice, coil, readout, phase-encode).

    Raises:
        InvalidInputError: missing, truncated or corrupt file, not twix, no image scan,
            non-2D data, slice out of range, NaN or Inf.
    """
    path = require_file(path)
    image = _image_array(path, remove_os)
    array = _kspace_array(image, path, slice_index)
    return as_kspace_tensor(array, path)


def twix_shape(path: str | os.PathLike, remove_os: bool = False) -> tuple[int, ...]:
    """The shape ``read_twix`` gives, from the measurement data headers only (no samples read)."""
    path = require_file(path)
    sizes = _sizes(_image_array(path, remove_os), path)
    shape = (sizes["Cha"], sizes["Col"], sizes["Lin"])
    return shape if sizes["Sli"] == 1 else (sizes["Sli"], *shape)


def _image_array(path: Path, remove_os: bool):
    """twixtools' lazy ``twix_array`` of the image scan (headers parsed, samples not yet read)."""
    import twixtools

    # twixtools prints warnings (and, with verbose, progress) to stdout: keep the caller's clean.
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            scans = twixtools.read_twix(str(path), verbose=False, keep_acqend=True, parse_pmu=False,
                                        parse_geometry=False)
            if not scans or not {"Meas", "MeasYaps"} <= set(scans[-1].get("hdr", {})):
                raise InvalidInputError("no Siemens twix protocol header (not a twix file, or cut off within "
                                        "its header)", path)
            if not scans[-1]["mdb"]:
                raise InvalidInputError("no measurement data in the twix file (truncated after its header?)", path)
            # A complete measurement ends with an ACQEND block; a truncated one stops before it
            # (twixtools then returns the lines it got, which would read as undersampled data).
            if not scans[-1]["mdb"][-1].is_flag_set("ACQEND"):
                raise InvalidInputError("truncated twix file: the last measurement has no end-of-acquisition "
                                        "(ACQEND) block", path)
            _check_blocks(scans[-1], path)
            measurement = twixtools.map_twix(scans[-1])
        except InvalidInputError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the parser on these bytes is bad input
            raise InvalidInputError(f"not a readable Siemens twix file (not twix, truncated or corrupt): "
                                    f"{type(exc).__name__}: {one_line(exc)}", path) from exc
    if "image" not in measurement:
        found = sorted(k for k in measurement if k not in ("hdr", "hdr_str", "pmu"))
        raise InvalidInputError(f"no image scan in the twix file's last measurement (found: {found or 'nothing'})", path)
    image = measurement["image"]
    image.flags["remove_os"] = bool(remove_os)
    image.flags["squeeze_singletons"] = False
    return image


def _check_blocks(scan: dict, path: Path) -> None:
    """Refuse the damage that twixtools would read as valid data (twix files have no checksum).

    A damaged block header can raise the ACQEND flag early, and twixtools then stops there and
    returns the lines before it; or it can change a block's coil or sample count, which would
    silently resize the array. So: the ACQEND block must close the measurement (less than one
    readout's bytes after it), and every imaging readout must have the same coils and samples.
    """
    blocks = scan["mdb"]
    entry = scan.get("raidfile_hdr")  # VD/VE files: where the measurement lies in the file
    end = int(entry["off_"]) + int(entry["len_"]) if entry is not None else path.stat().st_size
    readouts = [b for b in blocks[:-1] if not b.is_flag_set("SYNCDATA")]
    block_size = min((int(b.dma_len) for b in readouts), default=0)
    tail = end - int(blocks[-1].mem_pos)
    if readouts and tail >= block_size:
        raise InvalidInputError(f"corrupt twix file: its end-of-acquisition block sits {tail} bytes before the end of "
                                "the measurement (a damaged block header?)", path)
    sizes = {(int(b.mdh.UsedChannels), int(b.mdh.SamplesInScan)) for b in readouts if b.is_image_scan()}
    if len(sizes) > 1:
        raise InvalidInputError(f"corrupt twix file: imaging readouts differ in (coils, samples): {sorted(sizes)}", path)


def _sizes(image, path: Path) -> dict[str, int]:
    """Size of every twixtools dimension; refuses sizes > 1 outside slice, line, coil, column."""
    sizes = dict(zip(image.dims, (int(s) for s in image.shape)))
    extra = {dim: size for dim, size in sizes.items() if dim not in _KEPT and size != 1}
    if extra:
        raise InvalidInputError(f"twix image scan has dimensions {extra} beyond slice/line/coil/column; "
                                "only 2D multi-slice Cartesian k-space is supported", path)
    return sizes


def _kspace_array(image, path: Path, slice_index: int | None) -> np.ndarray:
    """Read the samples: (Sli, Lin, Cha, Col) from twixtools -> (slice, coil, readout, line)."""
    sizes = _sizes(image, path)
    index = [slice(None)] * len(image.dims)
    if slice_index is not None:
        if not -sizes["Sli"] <= slice_index < sizes["Sli"]:
            raise InvalidInputError(f"slice {slice_index} out of range for {sizes['Sli']} slices", path)
        start = slice_index % sizes["Sli"]
        index[image.dims.index("Sli")] = slice(start, start + 1)
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            data = image[tuple(index)]
        except Exception as exc:  # noqa: BLE001 - samples are read lazily: a damaged file fails here
            raise InvalidInputError(f"corrupt twix data: {type(exc).__name__}: {one_line(exc)}", path) from exc
    kept = [image.dims.index(d) for d in _KEPT]
    volume = np.moveaxis(data, kept, range(data.ndim - 4, data.ndim))
    volume = volume.reshape(volume.shape[-4:])  # the other axes all have size 1
    volume = volume.transpose(0, 2, 3, 1)  # (Sli, Lin, Cha, Col) -> (slice, coil, readout, line)
    return volume[0] if volume.shape[0] == 1 else volume
