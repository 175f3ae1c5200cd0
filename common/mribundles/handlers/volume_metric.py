"""fastMRI's PSNR/SSIM of whole 3D volumes as an ignite metric, for the super-resolution bundle."""

from __future__ import annotations

from collections.abc import Callable

import torch
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce

from mribundles.metrics import nmse, psnr, ssim

_METRICS = {"nmse": nmse, "psnr": psnr, "ssim": ssim}


def volume_metric(metric: str, target: torch.Tensor, pred: torch.Tensor, slice_axis: int = 2) -> float:
    """A fastMRI metric of one volume pair, slices taken across ``slice_axis``.

    Args:
        metric: "psnr", "ssim" or "nmse" (`mribundles.metrics`: data range = ``target.max()``
            over the whole volume; SSIM in 2D per slice, averaged over slices).
        target, pred: (x, y, z) or (1, x, y, z), same shape.
        slice_axis: spatial axis (0, 1, 2) across which the volume is cut into 2D slices
            (2: axial planes of a RAS volume).
    """
    target, pred = (t.detach().reshape(t.shape[-3:]) for t in (target, pred))
    return _METRICS[metric](torch.movedim(target, slice_axis, 0), torch.movedim(pred, slice_axis, 0))


class VolumeMetric(Metric):
    """Mean over volumes of `volume_metric`; the per-volume values go to
    ``engine.state.metric_details[name]`` ((volumes, 1), MONAI's convention) for MetricsSaver.

    Args:
        metric: "psnr", "ssim" or "nmse".
        output_transform: engine output -> (preds, targets), each a batch or list of (1, x, y, z).
        slice_axis: see `volume_metric`.
    """

    def __init__(self, metric: str, output_transform: Callable = lambda x: x, slice_axis: int = 2, device: str | torch.device = "cpu"):
        self.metric, self.slice_axis = metric, slice_axis
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._sum = torch.tensor(0.0, dtype=torch.float64, device=self._device)
        self._count = torch.tensor(0, device=self._device)
        self._per_volume: list[float] = []

    @reinit__is_reduced
    def update(self, output) -> None:
        preds, targets = output
        for pred, target in zip(preds, targets):
            value = volume_metric(self.metric, target, pred, self.slice_axis)
            self._sum += value
            self._count += 1
            self._per_volume.append(value)

    def completed(self, engine, name: str) -> None:
        super().completed(engine, name)
        if hasattr(engine.state, "metric_details"):
            engine.state.metric_details[name] = torch.tensor(self._per_volume, dtype=torch.float64).reshape(-1, 1)

    @sync_all_reduce("_sum", "_count")
    def compute(self) -> float:
        return float(self._sum / self._count.clamp_min(1))
