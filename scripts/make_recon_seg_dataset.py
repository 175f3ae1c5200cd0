#!/usr/bin/env python
"""Build the joint reconstruction -> segmentation fine-tuning set (`brain_mri_recon_seg/configs/train.json`).

One training study: multi-slice 4-coil k-space SIMULATED from the real voxelmorph T1 subject
that ships in `mribundles/sample_data` (reoriented to RAS; every axial 1 mm plane through the
brain, each turned into coil k-space by `physics.simulate_multicoil_kspace`, seeded by the
plane), and its tissue labels (0 background, 1 CSF, 2 grey matter, 3 white matter) on the same
planes and affine. The training slabs take every ``step``-th of these planes, so they have the
chain's demo geometry (2 mm between slices) while their labels keep every 1 mm plane.

Validation is the chain's demo input (k-space simulated from the MNI152 template, never used
here) with the template's tissue labels, both shipped.

    python scripts/make_recon_seg_dataset.py --out data/generated/recon_seg_brain
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np

from mribundles.io.images import write_image
from mribundles.sample_data import path as sample_path
from mribundles.sample_data import write_simulated_kspace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/generated/recon_seg_brain"))
    parser.add_argument("--coils", type=int, default=4)
    args = parser.parse_args()

    image = nib.as_closest_canonical(nib.load(sample_path("voxelmorph_t1.nii.gz")))
    labels = nib.as_closest_canonical(nib.load(sample_path("voxelmorph_t1_tissue.nii.gz")))
    assert np.allclose(image.affine, labels.affine) and image.shape == labels.shape
    volume = np.asarray(image.dataobj, np.float32) / 255.0
    tissue = np.asarray(labels.dataobj, np.uint8)
    brain = np.flatnonzero((tissue > 0).mean(axis=(0, 1)) > 0.02)
    planes = np.arange(brain[0], brain[-1] + 1)
    affine = image.affine @ np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, float(planes[0])], [0, 0, 0, 1.0]])
    origin = (f"SIMULATED from the real voxelmorph T1 subject (reoriented to RAS): axial planes {planes[0]}-{planes[-1]} "
              f"step 1, {args.coils} coils, smooth phase, 30 dB noise")
    split = args.out / "train"
    write_simulated_kspace(split / "voxelmorph_t1_kspace.h5", [volume[:, :, z] for z in planes], [int(z) for z in planes],
                           affine, origin, args.coils)
    write_image(split / "voxelmorph_t1_label.nii.gz", tissue[:, :, planes], affine)
    print(f"{split}: {len(planes)} planes of {volume.shape[0]}x{volume.shape[1]}, {args.coils} coils; labels beside")


if __name__ == "__main__":
    main()
