"""Ignite handlers shared by the bundles."""

from mribundles.handlers.recon_metric import ReconMetric
from mribundles.handlers.registration_report import RegistrationReport, save_registration_png
from mribundles.handlers.recon_writer import ReconstructionWriter, save_comparison_png, slice_names
from mribundles.handlers.run_report import RunReport
from mribundles.handlers.seg_overlay import SegmentationOverlayWriter, save_overlay_png

__all__ = [
    "from_engine_class",
    "ReconMetric",
    "ReconstructionWriter",
    "RegistrationReport",
    "RunReport",
    "SegmentationOverlayWriter",
    "save_comparison_png",
    "save_overlay_png",
    "save_registration_png",
    "slice_names",
]


def from_engine_class(keys: list[str], index: int):
    """``monai.handlers.from_engine(keys)`` keeping only channel ``index`` of each one-hot item.

    A metric handler fed by it scores one class as a scalar: MLflow, StatsHandler and
    MetricsSaver take scalars, not the per-class tensor of ``reduction="mean_batch"``.
    """

    def transform(output):
        return tuple([item[key][index : index + 1] for item in output] for key in keys)

    return transform
