"""Dataset listings for MONAI datasets: one dict per k-space slice, image, pair or file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from mribundles.errors import InvalidInputError
from mribundles.io.kspace import H5_SUFFIXES, kspace_shape
from mribundles.io.twix import TWIX_SUFFIXES

# One name per dataset: BART's .hdr stands beside its .cfl. ISMRMRD files are .h5 as well.
_LISTED_SUFFIXES = {*H5_SUFFIXES, ".npy", ".cfl", *TWIX_SUFFIXES}


def kspace_slices(files: str | os.PathLike | Sequence[str | os.PathLike], key: str = "kspace") -> list[dict]:
    """`[{key: file, "slice": i}, ...]` for every slice of every file; one dict for a 2D file.

    A folder stands for the k-space files in it (sorted), so configs can name a dataset folder;
    one with none is refused rather than giving a run with nothing to do.
    """
    paths = [Path(files)] if isinstance(files, (str, os.PathLike)) else [Path(f) for f in files]
    expanded = []
    for path in paths:
        if not path.is_dir():
            expanded.append(path)
            continue
        listed = sorted(p for p in path.iterdir() if p.suffix.lower() in _LISTED_SUFFIXES)
        if not listed:
            raise InvalidInputError(f"a folder with no k-space file ({', '.join(sorted(_LISTED_SUFFIXES))}) in it", path)
        expanded.extend(listed)
    items = []
    for path in expanded:
        shape = kspace_shape(path)
        if len(shape) == 3:
            items.append({key: str(path)})
        else:
            items.extend({key: str(path), "slice": i} for i in range(shape[0]))
    return items


def image_label_pairs(folder: str | os.PathLike, label_suffix: str = "_label") -> list[dict]:
    """`[{"image": X.nii.gz, "label": X_label.nii.gz}, ...]` for every image of `folder` with a
    label map beside it (sorted). Raises FileNotFoundError when there is none, so a wrong
    dataset_dir fails at once rather than training on nothing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: dataset folder not found")
    pairs = []
    for image in sorted(folder.glob("*.nii.gz")):
        stem = image.name[: -len(".nii.gz")]
        label = folder / f"{stem}{label_suffix}.nii.gz"
        if not stem.endswith(label_suffix) and label.is_file():
            pairs.append({"image": str(image), "label": str(label)})
    if not pairs:
        raise FileNotFoundError(f"{folder}: no image with a '{label_suffix}' label map beside it")
    return pairs


def registration_pairs(moving: str | list, fixed: str | list, moving_label: str | list | None = None, fixed_label: str | list | None = None) -> list[dict]:
    """`[{"moving_image", "fixed_image"[, "moving_label"][, "fixed_label"]}, ...]`: one entry per
    pair, from single paths or equally long lists. A label left out (None or "") is simply
    absent, and the run reports no Dice for it."""
    def as_list(value) -> list:
        return [value] if isinstance(value, (str, os.PathLike)) or value is None else list(value)

    columns = {"moving_image": as_list(moving), "fixed_image": as_list(fixed), "moving_label": as_list(moving_label), "fixed_label": as_list(fixed_label)}
    n = len(columns["moving_image"])
    for key, values in columns.items():
        if len(values) == 1 and n > 1:
            columns[key] = values * n
        elif len(columns[key]) != n:
            raise ValueError(f"{key}: {len(values)} entries for {n} moving images")
    return [{k: str(v[i]) for k, v in columns.items() if v[i]} for i in range(n)]


def file_items(files: str | os.PathLike | Sequence[str | os.PathLike], key: str) -> list[dict]:
    """`[{key: file}, ...]`: one item per file, from one path or a list of them (the studies of
    a chain, the volumes of a segmentation run)."""
    paths = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    return [{key: path} for path in paths]
