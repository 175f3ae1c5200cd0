"""Write each reconstructed volume as NIfTI and a PNG figure (zero-filled beside reconstruction)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from matplotlib.figure import Figure

from mribundles.io.atomic import atomic_path
from mribundles.io.geometry import assemble_volume
from mribundles.io.images import write_image


class ReconstructionWriter:
    """Collects the slices of every input file and writes, when the run completes,

    - `<stem>_recon.nii.gz`: the reconstruction, (x, y, slice) = (kx, ky, slice) float32, on the
      k-space file's grid (`io.geometry.assemble_volume`: the same volume and affine a chain's
      reconstruction stage gives);
    - `<stem>_recon.png`: the zero-filled image beside the reconstruction, middle slice.

    Slices arrive in any order and any batch size; `kspace_meta_dict` (from `LoadKspaced`)
    names the source file and slice. Both files are written atomically.

    Args:
        output_dir: destination folder (created).
        input_key: batch key of the image to show beside the reconstruction.
        meta_key: batch key with `filename_or_obj` and `slice`.
        pred_key: output key of the reconstruction.
        voxel_size: (column, row, slice) spacing in mm of files that state no geometry.
    """

    def __init__(self, output_dir: str, input_key: str = "zero_filled", meta_key: str = "kspace_meta_dict", pred_key: str = "pred",
                 voxel_size=(1.0, 1.0, 1.0)):
        self.output_dir = Path(output_dir)
        self.input_key, self.meta_key, self.pred_key = input_key, meta_key, pred_key
        self.voxel_size = tuple(voxel_size)
        self._slices: dict[str, dict[int, tuple[torch.Tensor, torch.Tensor]]] = defaultdict(dict)
        self.written: list[Path] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def collect(self, engine: Engine) -> None:
        for item, output in zip(engine.state.batch, engine.state.output):
            meta = item[self.meta_key]
            source, index = str(meta["filename_or_obj"]), int(meta["slice"])
            image = item[self.input_key].detach().squeeze(0).float().cpu()
            pred = output[self.pred_key].detach().squeeze(0).float().cpu()
            self._slices[source][index] = (image, pred)

    def write(self, engine: Engine | None = None) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for source, slices in self._slices.items():
            order = sorted(slices)
            inputs = torch.stack([slices[i][0] for i in order])
            preds = torch.stack([slices[i][1] for i in order])
            stem = self.output_dir / (Path(source).name.split(".")[0] + "_recon")
            volume = assemble_volume(preds, source, self.voxel_size)
            write_image(f"{stem}.nii.gz", volume[0].numpy(), volume.affine.numpy())
            save_comparison_png(f"{stem}.png", {"zero-filled": inputs[len(order) // 2], "reconstruction": preds[len(order) // 2]})
            self.written += [Path(f"{stem}.nii.gz"), Path(f"{stem}.png")]
        self._slices.clear()


def save_comparison_png(path: str, images: dict[str, torch.Tensor], error_maps: bool = False) -> None:
    """Images side by side on one grey scale (the last image's 99.5th percentile), atomically.

    ``error_maps``: the first image is the reference; a second row shows every other image's
    absolute error against it, on one scale (a fifth of the grey scale's top, so that errors
    of a few percent are visible).
    """
    vmax = float(np.percentile(list(images.values())[-1].numpy(), 99.5)) or 1.0
    rows = 2 if error_maps else 1
    fig = Figure(figsize=(4 * len(images), 4.4 * rows))  # not pyplot's: no backend to choose, no figure to close
    axes = fig.subplots(rows, len(images), squeeze=False)
    reference = next(iter(images.values()))
    for column, (title, image) in enumerate(images.items()):
        ax = axes[0, column]
        ax.imshow(image.numpy(), cmap="gray", vmin=0, vmax=vmax)
        ax.set_title(title)
        ax.axis("off")
        if error_maps:
            axes[1, column].axis("off")
            if column > 0:
                axes[1, column].imshow((image - reference).abs().numpy(), cmap="inferno", vmin=0, vmax=vmax / 5)
                axes[1, column].set_title(f"|{title} - {next(iter(images))}|")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def slice_names(batch: list[dict], meta_key: str = "kspace_meta_dict") -> list[dict]:
    """``file#slice`` names of a decollated batch, as MetricsSaver's ``batch_transform`` expects."""
    return [{"filename_or_obj": f"{Path(str(item[meta_key]['filename_or_obj'])).name}#{int(item[meta_key]['slice'])}"} for item in batch]
