"""fastMRI's NMSE/PSNR/SSIM as ignite metrics, for validation inside MONAI engines."""

from __future__ import annotations

from collections.abc import Callable

import torch
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce

from mribundles.metrics import nmse, psnr, ssim

_METRICS = {"nmse": nmse, "psnr": psnr, "ssim": ssim}


class ReconMetric(Metric):
    """Mean over slices of a fastMRI metric, each slice scored with its own maximum.

    fastMRI scores whole volumes; during training the validation set arrives slice by slice,
    so this is the per-slice mean, the usual validation proxy. The model cards report the
    volume-level figures of `mribundles evaluate-recon`.

    Args:
        metric: "nmse", "psnr" or "ssim".
        output_transform: maps the engine output to (pred, target) batches of (B, 1, H, W).
    """

    def __init__(self, metric: str, output_transform: Callable = lambda x: x, device: str | torch.device = "cpu"):
        self.metric_fn = _METRICS[metric]
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._sum = torch.tensor(0.0, dtype=torch.float64, device=self._device)
        self._count = torch.tensor(0, device=self._device)
        self._per_slice: list[float] = []

    @reinit__is_reduced
    def update(self, output) -> None:
        preds, targets = output
        for pred, target in zip(preds, targets):
            value = self.metric_fn(target.detach().reshape(target.shape[-2:]), pred.detach().reshape(pred.shape[-2:]))
            self._sum += value
            self._count += 1
            self._per_slice.append(float(value))

    def completed(self, engine, name: str) -> None:
        """Also store this process's per-slice values as ``engine.state.metric_details[name]``
        ((slices, 1), MONAI's convention), for MetricsSaver's per-case table and run tracking."""
        super().completed(engine, name)
        if hasattr(engine.state, "metric_details"):
            engine.state.metric_details[name] = torch.tensor(self._per_slice, dtype=torch.float64).reshape(-1, 1)

    @sync_all_reduce("_sum", "_count")
    def compute(self) -> float:
        return float(self._sum / self._count.clamp_min(1))
