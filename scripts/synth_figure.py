#!/usr/bin/env python
"""Figure and table: the training data engine (`mribundles.synth`) beside real raw k-space.

Top row: the RSS images of the REAL raw scans here (the pulseq in-vivo brain, a test scan that is
only looked at, never trained on; the pulseq phantom). Below: RSS images of examples the engine
draws (real slices and label-map syntheses through random acquisitions), and images synthesised
from a real label map in T1-, T2-, PD-like and random contrast beside the real T1 slices of the
MNI template and the voxelmorph subject. The table compares the statistics of
`mribundles.synth.realism` (noise level outside the head, coil-map smoothness, phase roughness,
intensity quantiles) between the real scans and the engine's draws.

    python scripts/synth_figure.py --data ../shared/data --out docs/synth_engine.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from mribundles.physics import ifft2c, rss
from mribundles.sample_data import path as sample_path
from mribundles.synth import CONTRASTS, SyntheticKspaceDataset, load_label_map, synthesize_image
from mribundles.synth.realism import kspace_statistics

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO / "../shared/data")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "synth_engine.png")
    parser.add_argument("--draws", type=int, default=60, help="engine examples for the statistics")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from matplotlib.figure import Figure  # not pyplot: a file, never a window, and no backend to choose

    from mribundles.io.atomic import atomic_path

    real = {
        "REAL in-vivo brain (test scan)": torch.from_numpy(np.load(sample_path("pulseq_invivo_brain_16ch_ksp.npy"))),
        "REAL phantom": torch.from_numpy(np.load(sample_path("pulseq_phantom_gre_32ch_ksp.npy"))),
    }
    dataset = SyntheticKspaceDataset(args.data, args.draws, seed=args.seed, fresh=False)
    draws = [dataset[i] for i in range(args.draws)]
    stats = {name: kspace_statistics(k) for name, k in real.items()}
    simulated = [kspace_statistics(d["kspace"]) for d in draws]

    labels, _ = load_label_map(sample_path("synthseg_training_seg_01.nii.gz"))
    plane = labels[:, 120, :].to(torch.int64).T.flip(0)  # an axial plane of the LIA map, anterior up
    syntheses = {f"label map, {c}": synthesize_image(plane, torch.Generator().manual_seed(i), contrast=c)
                 for i, c in enumerate((*CONTRASTS, "random"))}
    import nibabel as nib

    mni = np.asarray(nib.load(sample_path("mni152_2009a_t1.nii.gz")).dataobj, dtype=np.float32)
    vxm = np.asarray(nib.load(sample_path("voxelmorph_t1.nii.gz")).dataobj, dtype=np.float32)
    real_t1 = {"REAL T1, MNI152 template": np.rot90(mni[:, :, 80]), "REAL T1, voxelmorph subject": vxm[:, 100, :].T[::-1]}

    columns = 6
    fig = Figure(figsize=(3 * columns, 12.5))
    axes = fig.subplots(4, columns)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, k) in zip(axes[0], real.items()):
        ax.imshow(rss(ifft2c(k)), cmap="gray")
        ax.set_title(name, fontsize=9)
    for ax, (name, image) in zip(axes[0, 2:], real_t1.items()):
        ax.imshow(image, cmap="gray")
        ax.set_title(name, fontsize=9)
    for ax, (name, image) in zip(list(axes[1]) + [axes[0, 4], axes[0, 5]], list(syntheses.items())[:columns]):
        ax.imshow(image, cmap="gray")
        ax.set_title(f"synthesised: {name}", fontsize=9)
    for ax, draw in zip(axes[2:].flat, draws):
        meta = draw["kspace_meta_dict"]
        ax.imshow(rss(ifft2c(draw["kspace"])), cmap="gray")
        source = "label map" if "label map" in meta["filename_or_obj"] else "real slice"
        ax.set_title(f"engine: {source}, {meta['coils']} coils, SNR {float(meta['snr']):.0f}", fontsize=8)
    fig.suptitle("Training data engine (mribundles.synth) beside real scans", fontsize=12)
    fig.tight_layout()
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, dpi=70, format="png")

    def envelope(key):
        values = np.array([s[key] for s in simulated])
        return values.min(0), np.median(values, 0), values.max(0)

    print(f"statistics: {len(simulated)} engine draws (seed {args.seed}) against the real scans")
    print("| statistic | " + " | ".join(stats) + " | engine min / median / max |")
    print("|---|" + "---|" * (len(stats) + 1))
    for key in ("background_ratio", "coil_smoothness", "phase_roughness"):
        low, mid, high = envelope(key)
        print(f"| {key} | " + " | ".join(f"{s[key]:.3f}" for s in stats.values()) + f" | {low:.3f} / {mid:.3f} / {high:.3f} |")
    low, mid, high = envelope("intensity_quantiles")
    print("| intensity quantiles (10/25/50/75/90 %) | " + " | ".join(
        " ".join(f"{q:.2f}" for q in s["intensity_quantiles"]) for s in stats.values())
        + f" | {' '.join(f'{q:.2f}' for q in low)} / {' '.join(f'{q:.2f}' for q in mid)} / {' '.join(f'{q:.2f}' for q in high)} |")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
