"""Super-resolution transforms: simulate a low-resolution acquisition, bring a low-resolution
volume onto its high-resolution grid, and scale intensities for the network.

Every volume is a channel-first ``MetaTensor`` (C, x, y, z) whose affine follows the grid
convention of `mribundles.physics.degrade`: LR voxel ``i`` covers HR voxels
``f*i .. f*i + f - 1`` along an axis with factor ``f``. `SimulateLowResd` gives its LR output the
LR affine (`lowres_affine`); `ToHighResGridd` reads the factors back from that affine (voxel size
over ``target_spacing``) and gives its output the HR affine (`highres_affine`), so a simulated
pair lands exactly on the HR volume it came from, and a real LR file lands on the grid its
affine implies. The MONAI trace (``applied_operations``, e.g. an ``Orientationd``) is carried
over, so ``Invertd`` can map the result back to the input's orientation.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from mribundles.errors import InvalidInputError
from mribundles.physics.degrade import crop_to_multiple, highres_affine, lowres_affine, thick_slices, truncate_kspace
from mribundles.physics.interpolate import INTERPOLATION_MODES, interpolate

__all__ = [
    "DEGRADATIONS",
    "RestoreIntensityd",
    "ScaleIntensityByPercentiled",
    "SimulateLowResd",
    "ToHighResGridd",
    "degradation_factors",
    "degradation_list",
    "simulate_lowres",
    "slice_axis_of",
    "synthetic_degradation_list",
]

DEGRADATIONS = ("kspace", "slices", "none")
SCALE_KEY = "intensity_scale"


def slice_axis_of(affine: np.ndarray | torch.Tensor) -> int:
    """The array axis (0, 1 or 2) that runs most nearly along the world's inferior-superior
    axis: the slice axis of an axial acquisition."""
    directions = np.abs(np.asarray(affine, dtype=np.float64)[:3, :3])
    directions = directions / np.linalg.norm(directions, axis=0, keepdims=True)
    return int(np.argmax(directions[2]))


def degradation_factors(degradation: str, factor: int, axes: Sequence[int]) -> tuple[int, int, int]:
    """(fx, fy, fz): ``factor`` on ``axes`` (the in-plane axes for "kspace", the slice axis for
    "slices"), 1 elsewhere; all 1 for "none"."""
    if degradation not in DEGRADATIONS:
        raise ValueError(f"degradation must be one of {DEGRADATIONS}, got {degradation!r}")
    factors = [1, 1, 1]
    if degradation != "none":
        for axis in axes:
            factors[axis] = int(factor)
    return tuple(factors)


def simulate_lowres(volume: torch.Tensor, degradation: str, factors: Sequence[int]) -> torch.Tensor:
    """LR volume on its own grid from an HR (..., x, y, z) volume whose sizes are multiples of
    ``factors`` (see `degradation_factors`): `truncate_kspace`, or `thick_slices` along each axis
    with a factor above 1."""
    if degradation == "kspace":
        return truncate_kspace(volume, factors)
    if degradation == "slices":
        for axis, f in enumerate(factors):
            if f > 1:
                volume = thick_slices(volume, f, axis)
        return volume
    if degradation == "none":
        return volume
    raise ValueError(f"degradation must be one of {DEGRADATIONS}, got {degradation!r}")


def _check_degradation(degradation: str, factor: int) -> None:
    if degradation not in DEGRADATIONS:
        raise InvalidInputError(f"degradation must be one of {DEGRADATIONS}, got {degradation!r}")
    if int(factor) < 1:
        raise InvalidInputError(f"degradation factor must be an integer >= 1, got {factor}")


def degradation_list(
    files: Sequence[str], degradations: Sequence[str] = ("kspace", "slices"), factors: Sequence[int] = (2, 3, 4), slice_axes: Sequence[int] = (0, 1, 2)
) -> list[dict]:
    """A datalist with one entry per file, degradation, factor and slice axis, for
    ``SimulateLowResd(from_data=True)``: ``[{"image": f, "degradation": "kspace", "factor": 2,
    "slice_axis": 0}, ...]``. Every simulated pair is then deterministic, so a ``CacheDataset``
    computes each once and training draws patches of them at random."""
    return [
        {"image": str(f), "degradation": d, "factor": int(k), "slice_axis": int(a)}
        for f in files
        for d in degradations
        for k in factors
        for a in slice_axes
    ]


def synthetic_degradation_list(
    label_maps: str | os.PathLike,
    count: int,
    degradations: Sequence[str] = ("kspace", "slices"),
    factors: Sequence[int] = (4,),
    slice_axes: Sequence[int] = (0, 1, 2),
    seed: int = 0,
) -> list[dict]:
    """A datalist of ``count`` synthetic heads for ``SynthesizeHeadd`` then
    ``SimulateLowResd(from_data=True)``: entry ``i`` is ``{"image": label map, "seed": seed *
    count + i, "degradation": ..., "factor": ..., "slice_axis": ...}``, cycling through the label
    maps in ``label_maps`` (a folder of ``*.nii*``, as ``labels/synthseg/``) and through every
    degradation, factor and slice axis, so each is drawn equally often."""
    folder = Path(label_maps)
    maps = sorted(folder.glob("*.nii*"))
    if not maps:
        raise InvalidInputError("no label maps (*.nii, *.nii.gz) in this folder", folder)
    settings = [(d, int(k), int(a)) for d in degradations for k in factors for a in slice_axes]
    return [
        {"image": str(maps[i % len(maps)]), "seed": int(seed) * int(count) + i, "degradation": d, "factor": k, "slice_axis": a}
        for i, (d, k, a) in ((i, settings[i % len(settings)]) for i in range(int(count)))
    ]


def _meta_without_affine(image: torch.Tensor) -> dict:
    meta = dict(image.meta) if isinstance(image, MetaTensor) else {}
    meta.pop("affine", None)
    return meta


def _like(image: torch.Tensor, array: torch.Tensor, affine: np.ndarray, **meta) -> MetaTensor:
    """``array`` as a MetaTensor with ``image``'s meta and trace, a new affine and extra meta."""
    info = {**_meta_without_affine(image), **meta, "spatial_shape": np.asarray(array.shape[1:])}
    operations = list(image.applied_operations) if isinstance(image, MetaTensor) else []
    return MetaTensor(array, affine=torch.as_tensor(affine, dtype=torch.float64), meta=info, applied_operations=operations)


def _affine(image: torch.Tensor) -> np.ndarray:
    if not isinstance(image, MetaTensor):
        raise TypeError("super-resolution transforms need a MetaTensor carrying its affine (LoadVolumed gives one)")
    return np.asarray(image.affine, dtype=np.float64)


class SimulateLowResd(MapTransform):
    """HR volume -> the LR volume an acquisition with ``factor`` times coarser voxels would give.

    - ``"kspace"``: central k-space truncation on the two in-plane axes (`truncate_kspace`);
    - ``"slices"``: thick slices, a box profile of ``factor`` HR slices (`thick_slices`);
    - ``"none"``: the input is left alone (it is already the LR volume).

    The HR volume is first cropped at its far end to a multiple of the factor (voxel 0 and the
    affine are unchanged). The LR volume replaces the key's value, with the LR affine
    (`lowres_affine`) and ``meta["degradation"]`` describing what was done; the cropped HR volume
    goes to ``target_key`` (the training label, or the reference a demo compares to).

    Args:
        keys: keys of HR (C, x, y, z) MetaTensors.
        degradation: "kspace", "slices" or "none".
        factor: integer resolution loss, e.g. 4.
        slice_axis: the slice axis (0, 1, 2); None: the axis nearest the world's
            inferior-superior direction (axial slices, `slice_axis_of`).
        target_key: where the cropped HR volume goes; None: not kept. With several keys, the
            key's name is appended (``target_key + "_" + key``).
        from_data: take ``degradation``, ``factor`` and ``slice_axis`` from the data dictionary's
            entries of those names (a datalist of degradations, see `degradation_list`), the
            arguments being the defaults of entries that lack them.
    """

    def __init__(
        self,
        keys: KeysCollection,
        degradation: str = "kspace",
        factor: int = 4,
        slice_axis: int | None = None,
        target_key: str | None = "label",
        from_data: bool = False,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        _check_degradation(degradation, factor)
        self.degradation, self.factor, self.slice_axis, self.target_key = degradation, int(factor), slice_axis, target_key
        self.from_data = from_data

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        degradation, factor, slice_axis = self.degradation, self.factor, self.slice_axis
        if self.from_data:
            degradation, factor = d.get("degradation", degradation), int(d.get("factor", factor))
            slice_axis = d.get("slice_axis", slice_axis)
            _check_degradation(degradation, factor)
        keys = list(self.key_iterator(d))
        for key in keys:
            if degradation == "none":
                continue
            affine = _affine(d[key])
            axis = slice_axis_of(affine) if slice_axis is None else int(slice_axis)
            axes = (axis,) if degradation == "slices" else tuple(a for a in range(3) if a != axis)
            d[key], hr = self.simulate(d[key], degradation, degradation_factors(degradation, factor, axes))
            if self.target_key is not None:
                d[self.target_key if len(keys) == 1 else f"{self.target_key}_{key}"] = hr
        return d

    @staticmethod
    def simulate(image: MetaTensor, degradation: str, factors: tuple[int, int, int]) -> tuple[MetaTensor, MetaTensor]:
        """(LR on its grid, cropped HR) MetaTensors of one HR (C, x, y, z) MetaTensor."""
        affine = _affine(image)
        try:
            hr = crop_to_multiple(image.as_tensor(), factors)
        except ValueError as e:
            raise InvalidInputError(str(e), image.meta.get("filename_or_obj")) from e
        lr = simulate_lowres(hr, degradation, factors)
        description = f"{degradation} {'x'.join(str(f) for f in factors)}"
        return _like(image, lr, lowres_affine(affine, factors), degradation=description), _like(image, hr, affine)


class ToHighResGridd(MapTransform):
    """LR volume -> interpolated onto the HR grid its affine implies.

    Along each axis the factor is the voxel size over ``target_spacing``, rounded; it must be a
    whole number (within ``tolerance``, relative), and 1 or one of ``factors`` (those the network
    was trained for), else the input is refused with an InvalidInputError naming the file (never
    resampled by a guess, never handed to a network that has not learned that blur). The
    output has ``f`` times the voxels along each axis and the HR affine (`highres_affine`), and
    ``meta["lowres_factors"]`` records the factors.

    Args:
        keys: keys of LR (C, x, y, z) MetaTensors.
        target_spacing: HR voxel size in mm (the training data's).
        mode: "sinc", "cubic" or "linear" (`physics.interpolate`).
        factors: the factors accepted along a coarse axis; an axis at ``target_spacing`` (factor
            1) is always accepted.
        tolerance: relative deviation from a whole factor that is accepted (0.05: 3.9 mm
            voxels give factor 4 for 1 mm).
    """

    def __init__(
        self,
        keys: KeysCollection,
        target_spacing: float = 1.0,
        mode: str = "sinc",
        factors: Sequence[int] = (2, 3, 4),
        tolerance: float = 0.05,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        if mode not in INTERPOLATION_MODES:
            raise InvalidInputError(f"interpolation must be one of {INTERPOLATION_MODES}, got {mode!r}")
        self.target_spacing, self.mode, self.tolerance = float(target_spacing), mode, float(tolerance)
        self.accepted = sorted({1, *(int(f) for f in factors)})

    def factors(self, affine: np.ndarray, source: object = None) -> tuple[int, int, int]:
        """Integer factors (fx, fy, fz) of an LR affine; InvalidInputError when there are none."""
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        factors = []
        for axis, size in enumerate(spacing):
            ratio = size / self.target_spacing
            factor = max(1, int(round(ratio)))
            if abs(ratio / factor - 1) > self.tolerance:
                raise InvalidInputError(
                    f"voxel size {size:.3g} mm along axis {axis} is not a whole multiple of the target spacing "
                    f"{self.target_spacing:g} mm; resample the volume first or set target_spacing",
                    source,
                )
            if factor not in self.accepted:
                raise InvalidInputError(
                    f"voxel size {size:.3g} mm along axis {axis} is {factor}x the target spacing "
                    f"{self.target_spacing:g} mm; this network was trained for factors {self.accepted[1:]}",
                    source,
                )
            factors.append(factor)
        return tuple(factors)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            affine = _affine(image)
            factors = self.factors(affine, image.meta.get("filename_or_obj"))
            hr = interpolate(image.as_tensor(), factors, self.mode)
            d[key] = _like(image, hr, highres_affine(affine, factors), lowres_factors=factors)
        return d


class ScaleIntensityByPercentiled(MapTransform):
    """Divide every key by one scale: the ``percentile`` of ``ref_key``'s voxels.

    The scale goes to each output's ``meta["intensity_scale"]`` for `RestoreIntensityd`. A
    volume whose percentile is not positive (empty) is refused.

    Args:
        keys: keys to scale (the network input and, in training, its target).
        ref_key: the key whose percentile sets the scale; default the first key.
        percentile: in [0, 100].
    """

    def __init__(self, keys: KeysCollection, ref_key: str | None = None, percentile: float = 99.0, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.ref_key = ref_key or self.keys[0]
        self.percentile = float(percentile)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        ref = d[self.ref_key]
        flat = ref.reshape(-1).float()
        # Every k-th voxel, at most 2**20 of them: the same percentile to a fraction of a percent,
        # ten times faster than sorting a whole volume (and quantile() refuses over 2**24).
        scale = float(torch.quantile(flat[:: max(1, -(-flat.numel() // 2**20))], self.percentile / 100.0))
        if not scale > 0:
            source = ref.meta.get("filename_or_obj") if isinstance(ref, MetaTensor) else None
            raise InvalidInputError(f"image is empty (its {self.percentile:g}th percentile is {scale:g})", source)
        for key in self.key_iterator(d):
            d[key] = d[key] / scale
            if isinstance(d[key], MetaTensor):
                d[key].meta[SCALE_KEY] = scale
        return d


class RestoreIntensityd(MapTransform):
    """Multiply each key by its ``meta["intensity_scale"]`` (set by `ScaleIntensityByPercentiled`
    and carried from the network input to its output): back to the input's units."""

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = d[key] * float(d[key].meta[SCALE_KEY])
        return d
