"""Dataset listings: one dict per k-space slice, for MONAI datasets."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from mribundles.io.kspace import H5_SUFFIXES, kspace_shape

# One name per dataset: BART's .hdr stands beside its .cfl.
_LISTED_SUFFIXES = {*H5_SUFFIXES, ".npy", ".cfl"}


def kspace_slices(files: str | os.PathLike | Sequence[str | os.PathLike], key: str = "kspace") -> list[dict]:
    """`[{key: file, "slice": i}, ...]` for every slice of every file; one dict for a 2D file.

    A folder stands for the k-space files in it (sorted), so configs can name a dataset folder.
    """
    paths = [Path(files)] if isinstance(files, (str, os.PathLike)) else [Path(f) for f in files]
    expanded = []
    for path in paths:
        expanded.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in _LISTED_SUFFIXES) if path.is_dir() else [path])
    items = []
    for path in expanded:
        shape = kspace_shape(path)
        if len(shape) == 3:
            items.append({key: str(path)})
        else:
            items.extend({key: str(path), "slice": i} for i in range(shape[0]))
    return items
