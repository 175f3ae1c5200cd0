#!/usr/bin/env python
"""The same reconstruction -> segmentation work two ways, in one run, on the same device:

- **chain**: `brain_mri_recon_seg` as it runs: the reconstructed volume goes from the
  reconstruction stage to the segmentation stage as a MetaTensor on the device;
- **files**: the two bundles one after the other through a NIfTI file, as a user without the
  chain does it: the reconstruction is copied to the host and written as NIfTI (with the
  acquisition's affine, so that both ways segment the same grid), then read back through the
  segmentation bundle's own loader.

Both ways load their stage bundles once before timing (model loading is not what the chain
saves), write the same final outputs, and alternate (chain, files, files, chain, ...) after a
warm-up; the median of ``--repeats`` runs per way is reported with the ratio files / chain.
Also reported: the same comparison end to end from the command line (``python -m monai.bundle
run``: one process for the chain, two for the bundles), which adds process start-up and model
loading, which is what a user actually waits for.

    python scripts/bench_chain.py [--kspace FILE] [--device cpu|cuda] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mribundles.chains import PipelineChain, ReconStage, SegStage, kspace_affine
from mribundles.chains.budget import chain_settings
from mribundles.handlers.seg_overlay import save_overlay_png
from mribundles.io.images import write_image
from mribundles.io.kspace import kspace_shape
from mribundles.sample_data import multislice_kspace_demo
from mribundles.transforms import LoadVolumed

REPO = Path(__file__).resolve().parents[1]
CHAIN = REPO / "bundles/brain_mri_recon_seg"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_chain(chain: PipelineChain, kspace: str, out: Path) -> None:
    chain.output_dir = out
    chain.process(None, {"kspace": kspace})


def run_files(recon: ReconStage, seg: SegStage, kspace: str, affine: torch.Tensor, out: Path) -> None:
    volume = recon(kspace, affine.to(recon.device))
    recon_file = out / "recon.nii.gz"
    write_image(recon_file, volume[0].cpu().numpy(), volume.affine.cpu().numpy())  # stage 1 output
    loaded = LoadVolumed("image")({"image": str(recon_file)})["image"].to(seg.device)  # stage 2 input
    labels, (net_image, net_labels) = seg(loaded)
    write_image(out / "seg.nii.gz", labels[0].cpu().numpy().astype(np.uint8), labels.affine.cpu().numpy())
    save_overlay_png(out / "overview.png", net_image[0].cpu().float(), net_labels[0].cpu(), seg.class_names)


def cli_seconds(kspace: str, recon_bundle: str, seg_bundle: str, out: Path, device: str) -> tuple[float, float]:
    """(chain, two bundles) wall-clock seconds from the command line, one run each."""
    def run(config: Path, *args: str) -> float:
        start = time.perf_counter()
        cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(config), "--device", f"$torch.device('{device}')", *args]
        subprocess.run(cmd, check=True, capture_output=True, cwd=REPO)
        return time.perf_counter() - start

    # The recon bundle alone writes its NIfTI without the acquisition's affine (it sees slices, not
    # a volume), so the seg bundle segments that file on an assumed 1 mm grid: the timing compares
    # what users run today, not identical grids.
    chain = run(CHAIN / "configs/inference.json", "--kspace_file", kspace,
                "--recon_bundle", recon_bundle, "--output_dir", str(out / "chain"))
    recon = run(REPO / f"bundles/{recon_bundle}/configs/inference.json", "--kspace_file", kspace, "--mask", "random1d",
                "--output_dir", str(out / "recon"))
    recon_nifti = next((out / "recon").glob("*_recon.nii.gz"))
    seg = run(REPO / f"bundles/{seg_bundle}/configs/inference.json", "--image_file", str(recon_nifti),
              "--output_dir", str(out / "seg"))
    return chain, recon + seg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kspace", default=None, help="multi-slice k-space (default: the chain's demo input)")
    settings = chain_settings(CHAIN)
    parser.add_argument("--recon-bundle", default=settings["recon_bundle"], help="default: the chain's own")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-cli", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    kspace = args.kspace or multislice_kspace_demo()
    affine = kspace_affine(kspace, settings["voxel_size"])

    recon = ReconStage(args.recon_bundle, device, mask="random1d", acceleration=4, center_fraction=0.08, seed=0)
    seg = SegStage(settings["seg_bundle"], device)
    chain = PipelineChain(recon, seg=seg, output_dir=".", voxel_size=settings["voxel_size"])
    times = {"chain": [], "files": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ways = {"chain": lambda: run_chain(chain, kspace, tmp / "chain"),
                "files": lambda: run_files(recon, seg, kspace, affine, tmp / "files")}
        for way in ways.values():  # warm-up
            way()
        for i in range(args.repeats):
            for name in (("chain", "files") if i % 2 == 0 else ("files", "chain")):
                _sync(device)
                start = time.perf_counter()
                ways[name]()
                _sync(device)
                times[name].append(time.perf_counter() - start)
        cli = None if args.skip_cli else cli_seconds(kspace, args.recon_bundle, settings["seg_bundle"], tmp / "cli", args.device)

    chain_s, files_s = statistics.median(times["chain"]), statistics.median(times["files"])
    slices = kspace_shape(kspace)[0]
    print(f"data: {kspace} ({slices} slices), {args.recon_bundle} -> {settings['seg_bundle']}, device {device}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"in process, median of {args.repeats}: chain {chain_s:.2f} s, files {files_s:.2f} s, "
          f"ratio files/chain {files_s / chain_s:.3f}; {1 / chain_s:.3f} volumes/s in the chain")
    if cli is not None:
        print(f"command line, one run each: chain {cli[0]:.2f} s, two bundles {cli[1]:.2f} s, ratio {cli[1] / cli[0]:.3f}")


if __name__ == "__main__":
    main()
