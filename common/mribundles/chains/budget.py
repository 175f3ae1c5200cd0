"""How far can a scan be accelerated before the analysis changes?

For fully sampled multi-slice k-space, run a reconstruction -> segmentation chain at several
accelerations and compare each result with the chain's answer on the fully sampled data:
Dice of every class against the labels of the fully sampled volume (MONAI's `compute_dice`),
and PSNR/SSIM of the reconstructed volume against the fully sampled root-sum-of-squares
(fastMRI's definitions, ``maxval`` = the reference volume's maximum). Given the true tissue
labels of the imaged volume (``label_file``), it also reports Dice against them, for the
fully sampled volume and at each acceleration: how good the analysis is, not only how much
it changes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor

from mribundles.chains.stages import ReconStage, SegStage, find_bundle
from mribundles.io.geometry import assemble_volume
from mribundles.report import progress

__all__ = ["acceleration_budget", "chain_settings", "format_budget_table", "plot_budget"]


def chain_settings(chain_bundle: Path) -> dict:
    """The chain's stage bundles and geometry, read from its own inference.json."""
    config = json.loads((chain_bundle / "configs" / "inference.json").read_text(encoding="utf-8"))
    return {"recon_bundle": config["recon_bundle"], "seg_bundle": config["seg_bundle"], "voxel_size": config["voxel_size"]}


def _reference_volume(kspace_file: str | os.PathLike, voxel_size, device: torch.device) -> MetaTensor:
    """Root-sum-of-squares of every fully sampled slice, assembled as the chain assembles its
    volumes (`io.geometry.assemble_volume`)."""
    from mribundles.data import kspace_slices
    from mribundles.evaluation import require_fully_sampled
    from mribundles.io.kspace import load_kspace
    from mribundles.physics.coils import rss
    from mribundles.physics.fft import ifft2c

    slices = []
    for item in kspace_slices(kspace_file):
        kspace = load_kspace(kspace_file, slice_index=item.get("slice"))
        require_fully_sampled(kspace, kspace_file)
        slices.append(rss(ifft2c(kspace.to(device))))
    return assemble_volume(torch.stack(slices), kspace_file, voxel_size)


def acceleration_budget(
    chain: str | os.PathLike,
    kspace_file: str | os.PathLike,
    accelerations: list[float],
    mask: str = "random1d",
    seed: int = 0,
    device: str = "cpu",
    recon_bundle: str | None = None,
    recon_weights: str | os.PathLike | None = None,
    label_file: str | os.PathLike | None = None,
) -> dict:
    """Dice per class, mean Dice, PSNR and SSIM of the chain at each acceleration.

    ``recon_weights`` replaces the reconstruction bundle's weights (for instance the chain's
    jointly fine-tuned ones). ``label_file``: true labels (any grid and orientation, resampled
    to the acquisition's grid by nearest neighbour); each row then also has ``dice_truth``, and
    the result ``reference_dice_truth`` for the fully sampled volume.
    """
    from monai.metrics import compute_dice
    from monai.networks.utils import one_hot

    from mribundles.metrics import psnr, ssim

    chain_dir = find_bundle(chain)
    settings = chain_settings(chain_dir)
    recon_name = recon_bundle or settings["recon_bundle"]
    torch_device = torch.device(device)
    seg = SegStage(settings["seg_bundle"], torch_device)
    # Built and loaded once; the acceleration is an argument of each call.
    recon = ReconStage(recon_name, torch_device, mask=mask, seed=seed, weights=recon_weights)

    reference = _reference_volume(kspace_file, settings["voxel_size"], torch_device)
    reference_labels, _ = seg(reference)
    num_classes = len(seg.class_names) + 1
    target = one_hot(reference_labels[None].long(), num_classes)
    gt = reference[0].permute(2, 1, 0).float()  # (slice, ky, kx), as fastMRI scores volumes
    maxval = gt.max()

    def dice(labels: torch.Tensor, reference: torch.Tensor) -> dict:
        scores = compute_dice(one_hot(labels[None].long(), num_classes), reference, include_background=False)[0]
        return {name: float(d) for name, d in zip(seg.class_names, scores)}

    truth = None if label_file is None else one_hot(_labels_on_grid(label_file, reference_labels)[None].long(), num_classes)
    rows = []
    for acceleration in progress(list(accelerations), "acceleration", desc="acceleration budget"):
        volume = recon(kspace_file, voxel_size=settings["voxel_size"], acceleration=acceleration,
                       center_fraction=0.32 / acceleration)
        labels, _ = seg(volume)
        pred = volume[0].permute(2, 1, 0).float()
        row = {"acceleration": float(acceleration), "psnr": psnr(gt, pred, maxval), "ssim": ssim(gt, pred, maxval),
               "dice": dice(labels, target)}
        row["mean_dice"] = float(np.nanmean(list(row["dice"].values())))
        if truth is not None:
            row["dice_truth"] = dice(labels, truth)
        rows.append(row)
    extra = {} if truth is None else {"label_file": str(label_file), "reference_dice_truth": dice(reference_labels, truth)}
    return {
        "chain": chain_dir.name,
        "recon_bundle": recon_name,
        "seg_bundle": settings["seg_bundle"],
        "kspace_file": str(kspace_file),
        "mask": mask,
        "seed": seed,
        "recon_weights": None if recon_weights is None else str(recon_weights),
        "reference": "the chain's segmentation of the fully sampled root-sum-of-squares volume",
        **extra,
        "rows": rows,
    }


def _labels_on_grid(label_file: str | os.PathLike, like: MetaTensor) -> torch.Tensor:
    """The labels of ``label_file`` resampled (nearest neighbour) onto the grid of ``like``."""
    from monai.transforms import SpatialResample

    from mribundles.transforms import LoadVolumed

    labels = LoadVolumed("label", label_keys="label")({"label": str(label_file)})["label"].to(like.device)
    resample = SpatialResample(mode="nearest", padding_mode="zeros")
    return resample(labels.float(), dst_affine=like.affine, spatial_size=like.shape[1:]).as_tensor().round().to(torch.uint8)


def format_budget_table(result: dict) -> str:
    classes = list(result["rows"][0]["dice"]) if result["rows"] else []
    lines = [
        f"chain: {result['chain']} ({result['recon_bundle']} -> {result['seg_bundle']}), mask {result['mask']}, seed {result['seed']}",
        f"data: {result['kspace_file']}",
        f"Dice against {result['reference']}",
        "",
        "| R | PSNR | SSIM | " + " | ".join(f"Dice {c}" for c in classes) + " | mean Dice |",
        "|---" * (4 + len(classes)) + "|",
    ]
    for row in result["rows"]:
        dice = " | ".join(f"{row['dice'][c]:.4f}" for c in classes)
        lines.append(f"| {row['acceleration']:g} | {row['psnr']:.2f} | {row['ssim']:.4f} | {dice} | {row['mean_dice']:.4f} |")
    if "reference_dice_truth" in result:
        lines += ["", f"Dice against the true labels ({result['label_file']})", "",
                  "| R | " + " | ".join(f"Dice {c}" for c in classes) + " |", "|---" * (1 + len(classes)) + "|",
                  "| fully sampled | " + " | ".join(f"{result['reference_dice_truth'][c]:.4f}" for c in classes) + " |"]
        lines += [f"| {row['acceleration']:g} | " + " | ".join(f"{row['dice_truth'][c]:.4f}" for c in classes) + " |"
                  for row in result["rows"]]
    return "\n".join(lines)


def plot_budget(result: dict, path: str | os.PathLike) -> None:
    """Dice per class (left axis) and PSNR (right axis) against the acceleration, atomically."""
    from matplotlib.figure import Figure

    from mribundles.io.atomic import atomic_path

    rows = result["rows"]
    r = [row["acceleration"] for row in rows]
    fig = Figure(figsize=(6.5, 4.2))  # not pyplot's: no backend to choose, no figure to close
    ax = fig.subplots()
    for name in rows[0]["dice"]:
        ax.plot(r, [row["dice"][name] for row in rows], marker="o", label=f"Dice {name}")
    ax.set_xlabel("acceleration R")
    ax.set_ylabel("Dice vs fully sampled")
    ax.set_ylim(0, 1.02)
    right = ax.twinx()
    right.plot(r, [row["psnr"] for row in rows], color="black", linestyle="--", marker="s", label="PSNR")
    right.set_ylabel("PSNR (dB)")
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="lower left", fontsize=8)
    ax.set_title(f"{result['recon_bundle']} -> {result['seg_bundle']} ({result['mask']})")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
