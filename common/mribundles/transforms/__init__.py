"""MONAI MapTransforms shared by every bundle."""

from mribundles.transforms.kspace import (
    MASK_KINDS,
    CropKspaced,
    LoadKspaced,
    NormalizeKspaced,
    ReferenceImaged,
    RSSImaged,
    UndersampleKspaced,
    ZeroFilld,
)

__all__ = [
    "MASK_KINDS",
    "CropKspaced",
    "LoadKspaced",
    "NormalizeKspaced",
    "ReferenceImaged",
    "RSSImaged",
    "UndersampleKspaced",
    "ZeroFilld",
]
