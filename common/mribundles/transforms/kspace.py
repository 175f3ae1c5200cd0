"""MONAI dictionary transforms for multi-coil k-space, shared by every reconstruction bundle.

Keys are explicit arguments. A sample is a dict that, after these transforms, holds
  kspace       complex64 (coil, ky, kx): measured (or retrospectively undersampled) k-space
  mask         bool (ky, kx): the sampled locations
  target       float32 (1, H, W): RSS of the fully sampled k-space, when there is one
  zero_filled  float32 (1, H, W): RSS of the zero-filled undersampled k-space
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import CenterSpatialCrop, MapTransform, Randomizable
from monai.utils import convert_to_tensor

from mribundles.errors import InvalidInputError
from mribundles.io.kspace import load_kspace
from mribundles.physics.coils import rss
from mribundles.physics.fft import fft2c, ifft2c
from mribundles.physics.masks import MASK_KINDS as DRAWN_MASK_KINDS
from mribundles.physics.masks import make_mask, mask_from_kspace

# "none" keeps prospectively undersampled data as acquired; the others draw a mask.
MASK_KINDS = ("none", *DRAWN_MASK_KINDS)


class LoadKspaced(MapTransform):
    """Replace a k-space file path by its complex64 (coil, ky, kx) tensor.

    A multi-slice file (slice, coil, ky, kx) needs the slice index under `slice_key`
    (see `mribundles.data.kspace_slices`). The source is kept under `<key>_meta_dict` so that
    writers can name their outputs after it.
    """

    def __init__(self, keys: KeysCollection = "kspace", slice_key: str = "slice", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.slice_key = slice_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            path = d[key]
            index = d.get(self.slice_key)
            kspace = load_kspace(path, slice_index=None if index is None else int(index))
            if kspace.ndim != 3:
                raise InvalidInputError(
                    f"multi-slice k-space {tuple(kspace.shape)} needs a slice index; "
                    "list its slices with mribundles.data.kspace_slices",
                    path,
                )
            d[key] = kspace
            d[f"{key}_meta_dict"] = {"filename_or_obj": str(path), "slice": -1 if index is None else int(index)}
        return d


class RSSImaged(MapTransform):
    """Root-sum-of-squares image of multi-coil k-space, (coil, ky, kx) -> (1, ky, kx)."""

    def __init__(self, keys: KeysCollection = "kspace", output_key: str = "image"):
        super().__init__(keys)
        self.output_key = output_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = rss(ifft2c(d[key])).unsqueeze(0)
        return d


class ReferenceImaged(RSSImaged):
    """RSS image of the fully sampled k-space, before undersampling: the training target."""

    def __init__(self, keys: KeysCollection = "kspace", output_key: str = "target"):
        super().__init__(keys, output_key)


class UndersampleKspaced(Randomizable, MapTransform):
    """Apply a sampling mask to k-space and store the mask.

    `kind="none"` keeps the data as it was acquired and takes the mask from its non-zero samples
    (prospectively undersampled data). Other kinds draw a mask (see `physics.masks.make_mask`):
    with a fixed `seed` the same mask every call (evaluation), with `seed=None` a new mask per
    call drawn from this transform's random state (training).
    """

    def __init__(
        self,
        keys: KeysCollection = "kspace",
        mask_key: str = "mask",
        kind: str = "none",
        acceleration: float = 4.0,
        center_fraction: float = 0.08,
        seed: int | None = None,
    ):
        super().__init__(keys)
        if kind not in MASK_KINDS:
            raise InvalidInputError(f"unknown mask kind {kind!r}; choose one of {', '.join(MASK_KINDS)}")
        self.mask_key, self.kind = mask_key, kind
        self.acceleration, self.center_fraction, self.seed = float(acceleration), float(center_fraction), seed

    def randomize(self, data: object = None) -> None:
        self._seed = self.seed if self.seed is not None else int(self.R.randint(0, 2**31 - 1))

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        self.randomize()
        for key in self.key_iterator(d):
            kspace = d[key]
            if self.kind == "none":
                mask = mask_from_kspace(kspace)
            else:
                mask = make_mask(self.kind, kspace.shape[-2:], self.acceleration, self.center_fraction, self._seed)
                mask = mask.to(kspace.device)
                kspace = kspace * mask
            d[key], d[self.mask_key] = kspace, mask
        return d


class RandUndersampleKspaced(UndersampleKspaced):
    """Undersample with a mask drawn per call from a mixture: its kind from ``kinds`` (with
    ``weights``), its acceleration uniform in ``accelerations``, its centre fraction from
    ``center_fractions`` (1D kinds keep only fractions below 1 / acceleration, so that lines are
    left to draw outside the centre). Training sees every sampling a site may use, rather than
    a few fixed ones."""

    def __init__(
        self,
        keys: KeysCollection = "kspace",
        mask_key: str = "mask",
        kinds: Sequence[str] = ("random1d", "equispaced1d", "poisson2d"),
        weights: Sequence[float] | None = None,
        accelerations: tuple[float, float] = (2.0, 12.0),
        center_fractions: Sequence[float] = (0.04, 0.06, 0.08, 0.12),
    ):
        super().__init__(keys, mask_key, kind=kinds[0])
        unknown = [k for k in kinds if k not in DRAWN_MASK_KINDS]
        if unknown:
            raise InvalidInputError(f"unknown mask kinds {unknown}; choose from {', '.join(DRAWN_MASK_KINDS)}")
        self.kinds, self.accelerations, self.center_fractions = tuple(kinds), tuple(accelerations), tuple(center_fractions)
        self.weights = None if weights is None else [w / sum(weights) for w in weights]

    def randomize(self, data: object = None) -> None:
        self.kind = self.kinds[int(self.R.choice(len(self.kinds), p=self.weights))]
        self.acceleration = float(self.R.uniform(*self.accelerations))
        fractions = [f for f in self.center_fractions if self.kind not in ("random1d", "equispaced1d") or f < 0.9 / self.acceleration]
        self.center_fraction = float(self.R.choice(fractions or [min(self.center_fractions)]))
        self._seed = int(self.R.randint(0, 2**31 - 1))


class ZeroFilld(RSSImaged):
    """RSS image of the undersampled k-space with zeros where not sampled: the naive
    reconstruction, and the input of image-domain networks."""

    def __init__(self, keys: KeysCollection = "kspace", output_key: str = "zero_filled"):
        super().__init__(keys, output_key)


class NormalizeKspaced(MapTransform):
    """Divide k-space and images by the maximum of a reference image (default: zero-filled).

    Raw k-space scales differ between scanners by orders of magnitude; the networks are
    scale-equivariant, but losses with a fixed data range are not. The zero-filled maximum is
    known at inference too, so training and inference see the same scale. The factor is kept
    under `scale_key`, for `RestoreScaled` to undo it.
    """

    def __init__(self, keys: KeysCollection, reference_key: str = "zero_filled", scale_key: str = "scale"):
        super().__init__(keys, allow_missing_keys=True)
        self.reference_key, self.scale_key = reference_key, scale_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        scale = d[self.reference_key].abs().amax().clamp_min(torch.finfo(torch.float32).tiny)
        for key in self.key_iterator(d):
            d[key] = d[key] / scale
        if self.reference_key not in self.keys:
            d[self.reference_key] = d[self.reference_key] / scale
        d[self.scale_key] = scale
        return d


def restore_scale(image: torch.Tensor, scale) -> torch.Tensor:
    """``image`` times ``scale``: back to the units of the k-space before `NormalizeKspaced`.

    ``scale`` is one number, or one per item of a batch: (B,) against an image (B, ...). It is
    applied in float32 on the image's device, differentiably (a chain trains through it).
    """
    scale = torch.as_tensor(scale).to(device=image.device, dtype=torch.float32)
    return image * scale.reshape(scale.shape + (1,) * (image.ndim - scale.ndim))


class RestoreScaled(MapTransform):
    """Multiply each key by the factor `NormalizeKspaced` divided by (under ``scale_key``): the
    postprocessing half of the pair, so that a reconstruction leaves the bundle in the units of
    its k-space file and no caller undoes the normalisation by hand.

    After `NormalizeKspaced` the network sees k-space on the scale it was trained on; this gives
    its output (``pred``), and any image shown beside it (``zero_filled``), the file's scale back.
    """

    def __init__(self, keys: KeysCollection = "pred", scale_key: str = "scale", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.scale_key = scale_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = restore_scale(d[key], d[self.scale_key])
        return d


class CropKspaced(MapTransform):
    """Centre-crop the image that k-space encodes, e.g. to drop readout oversampling.

    K-space (coil, ky, kx) goes to image space, each coil image is cropped to `roi_size` with
    MONAI's CenterSpatialCrop (coils as channels), and it returns to k-space.
    """

    def __init__(self, keys: KeysCollection, roi_size: Sequence[int]):
        super().__init__(keys)
        self.cropper = CenterSpatialCrop(roi_size)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            # MONAI's cropper returns a MetaTensor; the library keeps k-space a plain tensor.
            cropped = convert_to_tensor(self.cropper(ifft2c(d[key])), track_meta=False)
            d[key] = fft2c(cropped)
        return d
