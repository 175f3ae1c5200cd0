"""MapTransforms of the registration bundle: affine pre-alignment of a moving image to a fixed
one, random diffeomorphic training pairs, and warping by a predicted displacement field."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.networks.blocks import Warp
from monai.transforms import MapTransform, Randomizable
from monai.utils import convert_to_dst_type, ensure_tuple_rep

from mribundles.registration import affine_align, random_diffeomorphism

__all__ = ["AffineAlignd", "NamePaird", "RandDiffeomorphicPaird", "Warpd"]


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """The data of a MetaTensor as a plain tensor: an optimisation loop over MetaTensors spends
    most of its time propagating metadata (15x slower here)."""
    return tensor.as_tensor() if isinstance(tensor, MetaTensor) else tensor


def _sample(image: torch.Tensor, grid: torch.Tensor, mode: str) -> torch.Tensor:
    """(C, X, Y, Z) sampled at ``grid`` ((1, X, Y, Z, 3), `affine_grid` coordinates), zeros
    outside, MetaTensor metadata kept."""
    sampled = F.grid_sample(_plain(image)[None], grid, mode=mode, padding_mode="zeros", align_corners=False)[0]
    return convert_to_dst_type(sampled, image)[0]


def _warp(image: torch.Tensor, ddf: torch.Tensor, mode: str) -> torch.Tensor:
    """(C, X, Y, Z) and (3, X, Y, Z) -> (C, X, Y, Z), MetaTensor metadata kept."""
    warped = Warp(mode=mode, padding_mode="zeros")(_plain(image)[None], _plain(ddf)[None])[0]
    return convert_to_dst_type(warped, image)[0]


class AffineAlignd(MapTransform):
    """Align ``keys`` (the moving image first, then maps that move with it, such as its labels)
    to ``fixed_key`` by an affine map fitted with `registration.affine_align`, on the tensors'
    device. The images must already share the fixed grid (`ResampleToMatchd`), with
    comparable intensities. The fitted parameters go to ``theta_key``.
    """

    def __init__(self, keys: KeysCollection, fixed_key: str, mode: Sequence[str] | str = "bilinear", theta_key: str = "affine_theta", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.fixed_key, self.theta_key = fixed_key, theta_key
        self.mode = ensure_tuple_rep(mode, len(self.keys))

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        moving, fixed = _plain(d[self.keys[0]]), _plain(d[self.fixed_key])
        theta = affine_align(moving[None], fixed[None])
        # Sampled straight through the affine grid: the same values as warping by
        # `affine_ddf` (tests/test_registration.py), in half the time on a whole head.
        grid = F.affine_grid(theta, [1, 1, *fixed.shape[1:]], align_corners=False)
        for key, mode in self.key_iterator(d, self.mode):
            d[key] = _sample(d[key], grid, mode)
        d[self.theta_key] = theta[0]
        return d


class Warpd(MapTransform):
    """Warp ``keys`` by the displacement field at ``ddf_key`` ((3, X, Y, Z), voxels of their
    grid), writing each result to ``key + output_postfix``. Labels take ``mode="nearest"``."""

    def __init__(self, keys: KeysCollection, ddf_key: str = "pred", mode: Sequence[str] | str = "bilinear", output_postfix: str = "_warped", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.ddf_key, self.output_postfix = ddf_key, output_postfix
        self.mode = ensure_tuple_rep(mode, len(self.keys))

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        ddf = torch.as_tensor(d[self.ddf_key])
        for key, mode in self.key_iterator(d, self.mode):
            d[f"{key}{self.output_postfix}"] = _warp(d[key], ddf.to(d[key].device), mode)
        return d


class RandDiffeomorphicPaird(Randomizable, MapTransform):
    """Make a training pair from one real brain: ``image_key`` (and ``label_key``) warped by two
    independent `random_diffeomorphism` draws become ``moving_image``/``fixed_image`` (and
    ``moving_label``/``fixed_label``). The network then learns to undo deformations of the size
    and smoothness that separate two affinely aligned brains, with the true answer known to be
    invertible.

    Args:
        max_std: largest standard deviation of the velocity at the control points, in voxels.
        control_spacing: voxels between control points of the velocity field.
    """

    def __init__(self, image_key: str = "image", label_key: str | None = "label", max_std: float = 4.0, control_spacing: int = 16, prefixes: Sequence[str] = ("moving", "fixed")):
        keys = [image_key] + ([label_key] if label_key else [])
        super().__init__(keys, allow_missing_keys=False)
        self.image_key, self.label_key = image_key, label_key
        self.max_std, self.control_spacing, self.prefixes = max_std, control_spacing, tuple(prefixes)
        self._seeds: list[int] = []

    def randomize(self, data=None) -> None:
        self._seeds = [int(self.R.randint(0, 2**31 - 1)) for _ in self.prefixes]

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        self.randomize()
        image = d.pop(self.image_key)
        label = d.pop(self.label_key) if self.label_key else None
        for prefix, seed in zip(self.prefixes, self._seeds):
            generator = torch.Generator().manual_seed(seed)
            ddf = random_diffeomorphism(image.shape[1:], self.max_std, self.control_spacing, generator, image.device)[0]
            d[f"{prefix}_image"] = _warp(image, ddf, "bilinear")
            if label is not None:
                d[f"{prefix}_label"] = _warp(label, ddf, "nearest")
        return d


class NamePaird(MapTransform):
    """Name ``keys`` after the pair: their ``filename_or_obj`` becomes
    ``<moving folder>/<moving stem>_to_<fixed stem>.nii.gz``, so `SaveImaged` writes
    ``<moving>_to_<fixed>_<postfix>.nii.gz`` and many moving images registered to one atlas
    never overwrite each other's outputs."""

    def __init__(self, keys: KeysCollection, moving_key: str = "moving_image", fixed_key: str = "fixed_image", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.moving_key, self.fixed_key = moving_key, fixed_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        from mribundles.handlers.registration_report import pair_name

        d = dict(data)
        moving = d[self.moving_key]
        folder = Path(str(moving.meta.get("filename_or_obj", "."))).parent
        name = str(folder / f"{pair_name(moving, d[self.fixed_key])}.nii.gz")
        for key in self.key_iterator(d):
            d[key].meta["filename_or_obj"] = name
        return d
