"""MONAI MapTransforms shared by every bundle."""

from mribundles.transforms.kspace import (
    MASK_KINDS,
    CropKspaced,
    LoadKspaced,
    NormalizeKspaced,
    RandUndersampleKspaced,
    ReferenceImaged,
    RestoreScaled,
    RSSImaged,
    UndersampleKspaced,
    ZeroFilld,
)
from mribundles.transforms.radial import GridRadiald, LoadRadialKspaced, SelectSpokesd
from mribundles.transforms.registration import AffineAlignd, NamePaird, RandDiffeomorphicPaird, Warpd
from mribundles.transforms.superres import (
    RestoreIntensityd,
    ScaleIntensityByPercentiled,
    SimulateLowResd,
    ToHighResGridd,
    degradation_list,
    synthetic_degradation_list,
)
from mribundles.transforms.volume import LoadVolumed, SynthesizeHeadd, ZeroBackgroundd, is_foreground

__all__ = [
    "GridRadiald",
    "LoadRadialKspaced",
    "SelectSpokesd",
    "AffineAlignd",
    "NamePaird",
    "RandDiffeomorphicPaird",
    "Warpd",
    "MASK_KINDS",
    "CropKspaced",
    "LoadKspaced",
    "LoadVolumed",
    "NormalizeKspaced",
    "RandUndersampleKspaced",
    "ReferenceImaged",
    "RestoreIntensityd",
    "RestoreScaled",
    "RSSImaged",
    "ScaleIntensityByPercentiled",
    "SimulateLowResd",
    "SynthesizeHeadd",
    "ToHighResGridd",
    "UndersampleKspaced",
    "ZeroBackgroundd",
    "ZeroFilld",
    "degradation_list",
    "synthetic_degradation_list",
    "is_foreground",
]
