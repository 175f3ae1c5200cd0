"""Ignite handlers shared by the bundles."""

from mribundles.handlers.recon_metric import ReconMetric
from mribundles.handlers.recon_writer import ReconstructionWriter, save_comparison_png, slice_names

__all__ = ["ReconMetric", "ReconstructionWriter", "save_comparison_png", "slice_names"]
