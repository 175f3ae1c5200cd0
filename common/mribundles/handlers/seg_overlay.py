"""A PNG overview of each segmented volume: label colours over the image in three planes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from mribundles.io.atomic import atomic_path

# Colour per class index after the background (CSF, GM, WM, ...): colour-blind safe (Okabe-Ito).
LABEL_COLOURS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9"]


class SegmentationOverlayWriter:
    """Writes ``<output_dir>/<stem>_seg.png`` for every volume the engine segments.

    Three panels (axial, coronal, sagittal) through the centre of the labelled region, drawn
    from the network's grid (``image_key`` and ``pred_key`` of the engine output, in RAS after
    the bundle's Orientationd), so the anatomy is upright whatever the file's orientation.

    Args:
        output_dir: destination folder.
        class_names: names of classes 1.. (index 0 is background).
        image_key, pred_key: output keys of the image and of the label map, (1, x, y, z) or
            one-hot (C, x, y, z).
    """

    def __init__(self, output_dir: str, class_names: list[str], image_key: str = "image", pred_key: str = "pred"):
        self.output_dir = Path(output_dir)
        self.class_names = list(class_names)
        self.image_key, self.pred_key = image_key, pred_key
        self.written: list[Path] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        for output in engine.state.output:
            image = output[self.image_key]
            labels = output[self.pred_key]
            if labels.shape[0] > 1:  # one-hot
                labels = labels.argmax(0, keepdim=True)
            source = str(image.meta.get("filename_or_obj", "volume")) if hasattr(image, "meta") else "volume"
            stem = Path(source).name.split(".")[0]
            path = self.output_dir / f"{stem}_seg.png"
            save_overlay_png(path, image[0].detach().float().cpu(), labels[0].detach().cpu(), self.class_names)
            self.written.append(path)


def save_overlay_png(path: str | Path, image: torch.Tensor, labels: torch.Tensor, class_names: list[str]) -> None:
    """Three orthogonal planes through the labelled region's centre, written atomically."""
    image, labels = image.numpy(), labels.numpy().astype(np.int64)
    inside = np.argwhere(labels > 0)
    centre = inside.mean(0).round().astype(int) if len(inside) else np.array(labels.shape) // 2
    planes = {  # RAS: show axial from above with anterior up, coronal and sagittal with superior up
        "axial": (image[:, :, centre[2]], labels[:, :, centre[2]]),
        "coronal": (image[:, centre[1], :], labels[:, centre[1], :]),
        "sagittal": (image[centre[0], :, :], labels[centre[0], :, :]),
    }
    lo, hi = np.percentile(image[labels > 0] if len(inside) else image, [0.5, 99.5])
    cmap = ListedColormap(LABEL_COLOURS[: len(class_names)])
    fig = Figure(figsize=(13, 4.8))  # not pyplot's: no backend to choose, no figure to close
    axes = fig.subplots(1, 3)
    for ax, (title, (plane, plane_labels)) in zip(axes, planes.items()):
        ax.imshow(plane.T, cmap="gray", vmin=lo, vmax=hi, origin="lower")
        overlay = np.ma.masked_equal(plane_labels.T, 0)
        ax.imshow(overlay - 1, cmap=cmap, vmin=0, vmax=len(class_names) - 1, alpha=0.45, origin="lower", interpolation="nearest")
        ax.set_title(title)
        ax.axis("off")
    fig.legend(handles=[Patch(color=c, label=n) for c, n in zip(LABEL_COLOURS, class_names)], loc="lower center", ncol=len(class_names))
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
