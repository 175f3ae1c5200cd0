"""The training data engine as a dataset: every item is a new acquisition of a new slice.

`SyntheticKspaceDataset` draws an anatomy (`synth.anatomy`: a real slice or a label-map
synthesis) and a random acquisition of it (`synth.acquisition`) per item, so nothing is baked
into fixed k-space files and no two epochs see the same example. Items are seeded: with
``fresh=True`` (training) the n-th draw of index i uses seed (seed, i + n * length), so a run is
reproducible from its seed while every epoch is new, and processes that draw disjoint indices
(a DistributedSampler's ranks) draw different examples; with ``fresh=False`` (validation) item i
always uses (seed, i), the same examples every time.

Each item is ``{"kspace": complex64 (coil, readout, phase-encode), "kspace_meta_dict": {...}}``:
fully sampled k-space ready for the reconstruction transforms (reference, undersampling,
normalisation), like a loaded k-space slice.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from mribundles.synth.acquisition import AcquisitionRanges, simulate_acquisition
from mribundles.synth.anatomy import DEFAULT_EXCLUDE, AnatomyBank

__all__ = ["SyntheticKspaceDataset"]

SEED_STRIDE = 1_000_003  # a prime: (seed, n) pairs never collide for n below it


class SyntheticKspaceDataset(Dataset):
    """``length`` items per epoch of k-space simulated from the anatomy under ``data_root``.

    Args:
        data_root: folder laid out as ``../shared/data`` (``volumes/``, ``labels/synthseg/``).
        length: items per epoch.
        seed: base seed.
        fresh: a new example per draw (training) or a fixed example per index (validation).
        label_fraction: share of label-map syntheses among the anatomies.
        exclude: sources that never enter (see `synth.anatomy.DEFAULT_EXCLUDE`).
        acquisition: `AcquisitionRanges` or a dict of its fields (from a config).
        key: the item key of the k-space.
    """

    def __init__(
        self,
        data_root: str | os.PathLike,
        length: int,
        seed: int = 0,
        fresh: bool = True,
        label_fraction: float = 0.5,
        exclude: Sequence[str] = DEFAULT_EXCLUDE,
        acquisition: AcquisitionRanges | dict | None = None,
        key: str = "kspace",
    ):
        self.bank = AnatomyBank(data_root, label_fraction, exclude)
        self.length, self.seed, self.fresh, self.key = int(length), int(seed), fresh, key
        self.ranges = AcquisitionRanges(**acquisition) if isinstance(acquisition, dict) else acquisition or AcquisitionRanges()
        self.draws: dict[int, int] = {}  # index -> times drawn

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        count = self.draws.get(index, 0) if self.fresh else 0
        self.draws[index] = count + 1
        number = index + count * self.length
        generator = torch.Generator().manual_seed(self.seed * SEED_STRIDE + number)
        anatomy = self.bank.draw(generator)
        kspace, info = simulate_acquisition(anatomy.image, anatomy.spacing, generator, self.ranges)
        meta = {"filename_or_obj": f"simulated: {anatomy.source}", "slice": -1, "draw": number, **{
            k: str(v) for k, v in info.items()}}
        return {self.key: kspace, f"{self.key}_meta_dict": meta}
