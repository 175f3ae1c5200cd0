"""MONAI dictionary transforms for radial multi-coil k-space (`io.radial` files).

After them a sample holds
  kspace       complex64 (coil, spokes, readout): the spokes measured (or kept)
  trajectory   float32 (2, spokes, readout): where they were measured
  target       float32 (1, N, N): the file's reference image, when asked for
  zero_filled  float32 (1, N, N): RSS of the density-compensated gridding, the naive reconstruction
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from mribundles.errors import InvalidInputError
from mribundles.io.radial import read_radial_slice
from mribundles.physics.radial import grid_rss

__all__ = ["GridRadiald", "LoadRadialKspaced", "SelectSpokesd"]


class LoadRadialKspaced(MapTransform):
    """Replace a radial file path by one slice of its k-space (slice index under ``slice_key``,
    see `mribundles.data.kspace_slices`), adding its ``trajectory`` and, with ``reference_key``,
    the file's reference image. The source is kept under ``<key>_meta_dict`` for writers."""

    def __init__(self, keys: KeysCollection = "kspace", trajectory_key: str = "trajectory", slice_key: str = "slice",
                 reference_key: str | None = None):
        super().__init__(keys)
        self.trajectory_key, self.slice_key, self.reference_key = trajectory_key, slice_key, reference_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            path, index = d[key], int(d.get(self.slice_key) or 0)
            kspace, trajectory, reference = read_radial_slice(path, index, reference=self.reference_key is not None)
            d[key], d[self.trajectory_key] = kspace, trajectory
            if self.reference_key is not None:
                d[self.reference_key] = reference[None]
            d[f"{key}_meta_dict"] = {"filename_or_obj": str(path), "slice": index}
        return d


class SelectSpokesd(MapTransform):
    """Keep the first ``spokes`` spokes: retrospective undersampling of a golden-angle acquisition,
    whose every prefix covers k-space nearly uniformly (so any count is a valid acquisition)."""

    def __init__(self, keys: KeysCollection = "kspace", spokes: int = 64, trajectory_key: str = "trajectory"):
        super().__init__(keys)
        self.spokes, self.trajectory_key = int(spokes), trajectory_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            available = d[key].shape[-2]
            if self.spokes > available:
                source = d.get(f"{key}_meta_dict", {}).get("filename_or_obj")
                raise InvalidInputError(f"{self.spokes} spokes requested, the k-space holds {available}", source)
            d[key] = d[key][..., : self.spokes, :]
            d[self.trajectory_key] = d[self.trajectory_key][:, : self.spokes]
        return d


class GridRadiald(MapTransform):
    """RSS of the density-compensated gridding of each coil (`physics.radial`), (1, N, N) with
    N = readout / ``oversampling``: the naive reconstruction and the normalisation reference."""

    def __init__(self, keys: KeysCollection = "kspace", output_key: str = "zero_filled", trajectory_key: str = "trajectory",
                 oversampling: int = 2):
        super().__init__(keys)
        self.output_key, self.trajectory_key, self.oversampling = output_key, trajectory_key, oversampling

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = grid_rss(d[key], d[self.trajectory_key], self.oversampling)[None]
        return d
