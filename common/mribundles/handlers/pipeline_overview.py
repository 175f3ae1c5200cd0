"""One PNG of a chain run: the zero-filled and reconstructed volumes, then every later stage's
volume (super-resolved, tissue labels, registered, template) side by side, axial and coronal.
The columns follow the stages that ran (`overview_panels`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from mribundles.handlers.seg_overlay import LABEL_COLOURS
from mribundles.io.atomic import atomic_path

Panel = tuple[str, np.ndarray, np.ndarray, "np.ndarray | None"]

# The figure's columns in pipeline order: the key a chain gives a volume under, and its title.
# "seg" holds labels, drawn over the image they were computed from.
PANEL_TITLES = {
    "zero_filled": "zero-filled",
    "recon": "reconstructed",
    "sr": "super-resolved",
    "seg": "tissue labels",
    "registered": "registered to the template",
    "template": "template",
}


def overview_panels(volumes: dict[str, tuple[np.ndarray, np.ndarray]], sampled: float | None = None) -> list[Panel]:
    """The figure's panels for the stages that ran.

    ``volumes`` maps keys of `PANEL_TITLES` to ``(array (x, y, z), affine (4, 4))``; a stage that
    did not run has no key. Panels come in pipeline order; the labels (``"seg"``) are drawn over
    the last image before them (super-resolved, else reconstructed), on whose grid the
    segmentation stage leaves them. ``sampled``, the fraction of k-space measured, goes into the
    zero-filled panel's title.
    """
    unknown = sorted(set(volumes) - set(PANEL_TITLES))
    if unknown:
        raise ValueError(f"no overview panel for {unknown}; known: {list(PANEL_TITLES)}")
    panels: list[Panel] = []
    image = None  # the last image drawn: what labels are drawn over
    for key, title in PANEL_TITLES.items():
        if key not in volumes:
            continue
        volume, affine = volumes[key]
        if key == "seg":
            if image is None:
                raise ValueError("labels need the image they were computed from ('recon' or 'sr')")
            panels.append((title, *image, volume))
            continue
        if key == "zero_filled" and sampled is not None:
            title = f"{title}, {sampled:.0%} sampled"
        panels.append((title, volume, affine, None))
        if key in ("recon", "sr"):
            image = (volume, affine)
    return panels


def _near_ras(volume: np.ndarray, affine: np.ndarray, labels: np.ndarray | None):
    """(volume, affine, labels) with the voxel axes permuted and flipped to the closest RAS
    orientation (nibabel's): the axial and coronal cuts are then upright whatever axis order and
    direction the k-space file had. A volume already near RAS is returned as it is."""
    from nibabel import orientations as ornt

    turn = ornt.ornt_transform(ornt.io_orientation(affine), ornt.axcodes2ornt("RAS"))
    affine = np.asarray(affine) @ ornt.inv_ornt_aff(turn, volume.shape)
    volume = ornt.apply_orientation(volume, turn)
    return volume, affine, None if labels is None else ornt.apply_orientation(labels, turn)


def save_pipeline_png(path: str | Path, panels: list[Panel], class_names: list[str]) -> None:
    """Columns: one per panel ``(title, volume (x, y, z), affine (4, 4), labels (x, y, z) or
    None)``, each on its own grid (a 4 mm stack beside a 1 mm volume) drawn with its voxel
    aspect; rows: the axial and coronal planes through the centre of the head, each volume
    turned to its nearest RAS orientation first. Written atomically."""
    fig = Figure(figsize=(3.3 * len(panels), 7.0))  # not pyplot's: no backend to choose, no figure to close
    axes = fig.subplots(2, len(panels), squeeze=False)
    cmap = ListedColormap(LABEL_COLOURS[: max(1, len(class_names))])
    for col, panel in enumerate(panels):
        title = panel[0]
        volume, affine, labels = _near_ras(*panel[1:])
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
