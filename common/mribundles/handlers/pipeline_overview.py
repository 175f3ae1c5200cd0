"""One PNG of a whole pipeline run: every stage's volume side by side, axial and coronal."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from mribundles.handlers.seg_overlay import LABEL_COLOURS  # noqa: E402
from mribundles.io.atomic import atomic_path  # noqa: E402

Panel = tuple[str, np.ndarray, np.ndarray, "np.ndarray | None"]


def save_pipeline_png(path: str | Path, panels: list[Panel], class_names: list[str]) -> None:
    """Columns: one per panel ``(title, volume (x, y, z), affine (4, 4), labels (x, y, z) or
    None)``, each on its own grid (a 4 mm stack beside a 1 mm volume) drawn with its voxel
    aspect; rows: the axial and coronal planes through the centre of the head. Volumes are taken
    to be near RAS, as every stage of the pipeline leaves them. Written atomically."""
    fig, axes = plt.subplots(2, len(panels), figsize=(3.3 * len(panels), 7.0), squeeze=False)
    cmap = ListedColormap(LABEL_COLOURS[: max(1, len(class_names))])
    for col, (title, volume, affine, labels) in enumerate(panels):
        spacing = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
        head = np.argwhere(volume > np.percentile(volume, 99) * 0.1)
        cx, cy, cz = head.mean(0).round().astype(int) if len(head) else np.array(volume.shape) // 2
        lo, hi = np.percentile(volume, [0.5, 99.5])
        cuts = [(lambda v: v[:, :, cz], spacing[1] / spacing[0]), (lambda v: v[:, cy, :], spacing[2] / spacing[0])]
        for row, (cut, aspect) in enumerate(cuts):
            ax = axes[row, col]
            ax.imshow(cut(volume).T, cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect=aspect, interpolation="nearest")
            if labels is not None:
                overlay = np.ma.masked_equal(cut(labels).T.astype(np.int64), 0)
                ax.imshow(overlay - 1, cmap=cmap, vmin=0, vmax=max(1, len(class_names)) - 1, alpha=0.45, origin="lower",
                          aspect=aspect, interpolation="nearest")
            ax.axis("off")
            if row == 0:
                ax.set_title(f"{title}\n{' x '.join(f'{s:.3g}' for s in spacing)} mm", fontsize=10)
    if class_names and any(labels is not None for *_, labels in panels):
        fig.legend(handles=[Patch(color=c, label=n) for c, n in zip(LABEL_COLOURS, class_names)], loc="lower center", ncol=len(class_names))
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
