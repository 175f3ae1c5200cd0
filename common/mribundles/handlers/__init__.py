"""Ignite handlers shared by the bundles."""

from mribundles.handlers.recon_metric import ReconMetric
from mribundles.handlers.recon_writer import ReconstructionWriter, save_comparison_png, slice_names
from mribundles.handlers.seg_overlay import SegmentationOverlayWriter, save_overlay_png

__all__ = [
    "ReconMetric",
    "ReconstructionWriter",
    "SegmentationOverlayWriter",
    "save_comparison_png",
    "save_overlay_png",
    "slice_names",
]
