"""A PNG of each super-resolved volume: the interpolated input beside the network's output (and
the high-resolution reference when the run has one), in three planes."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from matplotlib.figure import Figure

from mribundles.handlers.volume_metric import volume_metric
from mribundles.io.atomic import atomic_path

logger = logging.getLogger(__name__)


class SuperResolutionFigure:
    """Writes ``<output_dir>/<stem>_sr.png`` for every volume the engine super-resolves.

    Rows: axial, coronal and sagittal planes through the centre of the head; columns: the
    interpolated input, the network's output and, when the batch holds ``reference_key`` (a
    simulated demo), the high-resolution reference, each with its PSNR/SSIM against it (also
    logged). All three are read on the network's grid (RAS after the bundle's Orientationd), in
    the input's intensity units.

    Args:
        output_dir: destination folder.
        input_key: batch key of the interpolated input (C, x, y, z).
        pred_key: engine output key of the super-resolved volume, same grid.
        reference_key: batch key of the reference, same grid; absent for a real LR input.
        input_label: column title of the input.
    """

    def __init__(
        self,
        output_dir: str,
        input_key: str = "interpolated",
        pred_key: str = "pred",
        reference_key: str = "reference",
        input_label: str = "interpolated input",
    ):
        self.output_dir = Path(output_dir)
        self.input_key, self.pred_key, self.reference_key, self.input_label = input_key, pred_key, reference_key, input_label
        self.written: list[Path] = []
        self.scores: dict[str, dict[str, float]] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        for item, output in zip(engine.state.batch, engine.state.output):
            volumes = {self.input_label: item[self.input_key], "super-resolved": output[self.pred_key]}
            reference = item.get(self.reference_key)
            source = str(output[self.pred_key].meta.get("filename_or_obj", "volume"))
            stem = Path(source).name.split(".")[0]
            titles = dict.fromkeys(volumes, "")
            if reference is not None:
                volumes["reference (1 mm)"] = reference
                for name in (self.input_label, "super-resolved"):
                    psnr = volume_metric("psnr", reference, volumes[name])
                    ssim = volume_metric("ssim", reference, volumes[name])
                    self.scores.setdefault(stem, {})[name] = psnr
                    titles[name] = f"\nPSNR {psnr:.2f} dB, SSIM {ssim:.4f}"
                    logger.info(f"{stem}: {name}: PSNR {psnr:.2f} dB, SSIM {ssim:.4f} against the reference")
            path = self.output_dir / f"{stem}_sr.png"
            save_sr_png(path, {k: v.detach().float().cpu().reshape(v.shape[-3:]) for k, v in volumes.items()}, titles)
            self.written.append(path)


def save_sr_png(path: str | Path, volumes: dict[str, torch.Tensor], titles: dict[str, str] | None = None) -> None:
    """Three planes (rows) of each (x, y, z) RAS volume (columns) on one grey scale, atomically."""
    titles = titles or {}
    first = next(iter(volumes.values())).numpy()
    head = np.argwhere(first > np.percentile(first, 99) * 0.1)
    centre = head.mean(0).round().astype(int) if len(head) else np.array(first.shape) // 2
    vmin, vmax = np.percentile(first, [0.5, 99.9])
    planes = {  # RAS: axial seen from above, anterior up; coronal and sagittal with superior up
        "axial": lambda v: v[:, :, centre[2]],
        "coronal": lambda v: v[:, centre[1], :],
        "sagittal": lambda v: v[centre[0], :, :],
    }
    fig = Figure(figsize=(3.6 * len(volumes), 3.4 * len(planes)))  # not pyplot's: no backend to choose, no figure to close
    axes = fig.subplots(len(planes), len(volumes), squeeze=False)
    for col, (name, volume) in enumerate(volumes.items()):
        for row, (plane, take) in enumerate(planes.items()):
            ax = axes[row, col]
            ax.imshow(take(volume.numpy()).T, cmap="gray", vmin=vmin, vmax=vmax, origin="lower", interpolation="nearest")
            ax.axis("off")
            if row == 0:
                ax.set_title(name + titles.get(name, ""), fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
