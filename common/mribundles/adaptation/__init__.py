"""Self-supervised adaptation of reconstruction networks to a site's own undersampled scans
(SSDU and its zero-shot variant): the mask split, the k-space loss, the adaptation loop, and the
bundle workflow that configs/adapt.json runs.

Only networks that compute their own multi-coil k-space (the unrolled RVN and VarNet) are
adapted; magnitude-only networks (the image U-Net, ReconResNet) are refused, because their
k-space cannot be formed faithfully from estimated coil maps (`models`)."""

from mribundles.adaptation.bundle import (
    ADAPTED_WEIGHTS,
    ADDENDUM,
    BundleAdaptation,
    acquired_items,
    adapt_and_reconstruct,
    load_weights,
)
from mribundles.adaptation.models import KspaceModel, UnrolledKspaceModel, kspace_model
from mribundles.adaptation.ssdu import (
    SPLIT_UNITS,
    AdaptationResult,
    MaskSplit,
    UnsplittableMaskError,
    adapt,
    draw_subset,
    holdout_loss,
    split_unit,
    ssdu_loss,
    ssdu_split,
    trainable_parameters,
)

__all__ = [
    "ADAPTED_WEIGHTS",
    "ADDENDUM",
    "SPLIT_UNITS",
    "AdaptationResult",
    "BundleAdaptation",
    "KspaceModel",
    "MaskSplit",
    "UnrolledKspaceModel",
    "UnsplittableMaskError",
    "acquired_items",
    "adapt",
    "adapt_and_reconstruct",
    "draw_subset",
    "holdout_loss",
    "kspace_model",
    "load_weights",
    "split_unit",
    "ssdu_loss",
    "ssdu_split",
    "trainable_parameters",
]
