#!/usr/bin/env python
"""PSNR and SSIM of the super-resolution bundle and of three interpolations on a held-out volume.

For each degradation (default: 4x4 in-plane k-space truncation of the axial planes, and 4x
thick axial slices) the 1 mm volume (default: the shipped MNI152 2009a template, never trained
on) is reoriented to RAS, cropped at its far end to a multiple of 4, and degraded with
`mribundles.transforms.SimulateLowResd`. The LR volume is written to a NIfTI file with its LR
affine; then

- sinc (zero-padded k-space), cubic (Keys, a = -0.5) and linear interpolation onto the 1 mm grid
  (`mribundles.physics.interpolate`), and
- the bundle: its own `inference.json` run on that LR file, as a user would run it
  (`--image_file LR.nii.gz`), reading back the NIfTI it writes,

are each compared with the 1 mm reference by `mribundles.metrics.psnr` and `ssim` (fastMRI's
definitions): PSNR over the whole volume with data range = the reference volume's maximum
(255 for the MNI template); SSIM per axial plane (7x7 window, same data range), averaged over
planes. Intensities are the file's own (uint8 0-255 for the MNI template). The template is
skull-stripped, so most of its voxels are an exactly zero background; "PSNR brain" is the same
PSNR (same data range) over the voxels where the reference is above zero only.

    python scripts/sr_table.py [--volume FILE] [--bundle bundles/brain_mri_sr] [--figures DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigWorkflow
from monai.transforms import Orientationd

from mribundles.handlers.sr_figure import save_sr_png
from mribundles.handlers.volume_metric import volume_metric
from mribundles.io.images import write_image
from mribundles.metrics import psnr
from mribundles.physics.interpolate import interpolate
from mribundles.sample_data import path as sample_path
from mribundles.transforms import LoadVolumed, SimulateLowResd

REPO = Path(__file__).resolve().parents[1]
DEGRADATIONS = {"k-space truncation 4x4 in-plane": ("kspace", 4), "thick slices 4x": ("slices", 4)}
INTERPOLATIONS = {"sinc (zero-padded k-space)": "sinc", "cubic (Keys, a=-0.5)": "cubic", "trilinear": "linear"}


def scores(reference: torch.Tensor, pred: torch.Tensor) -> dict:
    """PSNR and SSIM over the volume (axial planes for SSIM), and PSNR over the brain."""
    brain = reference > 0
    return {
        "psnr": volume_metric("psnr", reference, pred),
        "ssim": volume_metric("ssim", reference, pred),
        "psnr_brain": psnr(reference[brain][None], pred[brain][None], maxval=reference.max()),
    }


def run_bundle(bundle: Path, lr_file: Path, out: Path, device: str) -> torch.Tensor:
    """The bundle's inference.json on one LR file; returns its output volume (x, y, z)."""
    wf = ConfigWorkflow(config_file=str(bundle / "configs" / "inference.json"), meta_file=str(bundle / "configs" / "metadata.json"),
                        logging_file=str(bundle / "configs" / "logging.conf"), workflow_type="infer", bundle_root=str(bundle),
                        image_file=str(lr_file), output_dir=str(out), device=f"$torch.device('{device}')")
    wf.initialize()
    wf.run()
    wf.finalize()
    return torch.from_numpy(nib.load(out / (lr_file.name.split(".")[0] + "_sr.nii.gz")).get_fdata(dtype=np.float32))


def table(volume: str, bundle: Path, device: str, figures: Path | None = None) -> dict:
    """Scores of every method per degradation; with ``figures``, one PNG per degradation there
    (three planes of the reference, each interpolation and the bundle, with their PSNR/SSIM)."""
    loaded = Orientationd("image", axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(LoadVolumed("image")({"image": volume}))
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (degradation, factor) in DEGRADATIONS.items():
            d = SimulateLowResd("image", degradation=degradation, factor=factor, target_key="reference")(loaded)
            lr, reference = d["image"], d["reference"][0].as_tensor()
            lr_file = Path(tmp) / f"lr_{degradation}.nii.gz"
            write_image(lr_file, lr[0].numpy(), lr.affine.numpy())
            factors = tuple(int(round(s)) for s in np.linalg.norm(lr.affine.numpy()[:3, :3], axis=0))
            rows[name] = {"lr_shape": list(lr.shape[1:]), "hr_shape": list(reference.shape)}
            outputs = {}
            for label, mode in INTERPOLATIONS.items():
                outputs[label] = interpolate(lr[0].as_tensor(), factors, mode)
                rows[name][label] = scores(reference, outputs[label])
            start = time.time()
            sr = run_bundle(bundle, lr_file, Path(tmp) / "out", device)
            seconds = time.time() - start
            assert sr.shape == reference.shape, (sr.shape, reference.shape)
            rows[name]["bundle"] = {**scores(reference, sr), "seconds": seconds}
            if figures is not None:
                outputs["bundle"] = sr
                titles = {k: f"\nPSNR {rows[name][k]['psnr']:.2f} dB, SSIM {rows[name][k]['ssim']:.4f}" for k in outputs}
                save_sr_png(figures / f"superres_{degradation}{factor}.png", {"reference (1 mm)": reference, **outputs}, titles)
    return {"volume": volume, "data_range": float(loaded["image"].max()), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--volume", default=sample_path("mni152_2009a_t1.nii.gz"), help="1 mm reference volume (default: the MNI template)")
    parser.add_argument("--bundle", type=Path, default=REPO / "bundles/brain_mri_sr")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--figures", type=Path, help="folder for one PNG per degradation")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = table(args.volume, args.bundle, args.device, args.figures)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(markdown(result))


def markdown(result: dict) -> str:
    """The table, then per degradation the bundle's margin over the best interpolation."""
    lines = [f"volume: {Path(result['volume']).name}, PSNR data range {result['data_range']:g} (the reference's maximum)", "",
             "| degradation | method | PSNR (dB) | SSIM | PSNR brain (dB) |", "|---|---|---|---|---|"]
    for name, row in result["rows"].items():
        for method, m in row.items():
            if isinstance(m, dict):
                lines.append(f"| {name} | {method} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['psnr_brain']:.2f} |")
    for name, row in result["rows"].items():
        best = max(v["psnr"] for k, v in row.items() if isinstance(v, dict) and k != "bundle")
        lines += ["", f"{name}: LR {row['lr_shape']} -> HR {row['hr_shape']}; bundle - best interpolation = "
                  f"{row['bundle']['psnr'] - best:+.2f} dB; bundle inference {row['bundle']['seconds']:.1f} s (its whole run, with file I/O)"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
