#!/usr/bin/env python
"""Build the tissue-segmentation training and validation volumes from the real data in ../shared/data.

Labels: 0 background, 1 CSF, 2 grey matter, 3 white matter (`TISSUE_CLASSES`).

- Training: the voxelmorph T1 subject (a real scan) with its FreeSurfer aseg, mapped to the
  three tissues (`ASEG_TO_TISSUE`). The npz carries no affine; its axes are FreeSurfer's
  conformed LIA at 1 mm (left hemisphere labels lie at high axis-0 indices, the brainstem at
  high axis-1 indices), which is the affine we write.
- Validation, never trained on: the MNI152 2009a template (152 subjects averaged) with its
  grey- and white-matter probability maps; inside the skull-stripped brain, each voxel takes the
  most probable of CSF (the remainder, 1 - GM - WM), GM and WM.

The two label definitions differ at the margins (FreeSurfer counts the pallidum and deep nuclei
as grey matter; the MNI maps give them partial probabilities), which caps the Dice a perfect
segmenter of one could reach on the other; the model card says so.

    python scripts/make_seg_dataset.py --data ../shared/data --out data/generated/seg_brain
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np

from mribundles.io.images import write_image

TISSUE_CLASSES = {0: "background", 1: "CSF", 2: "grey matter", 3: "white matter"}

# FreeSurfer aseg label -> tissue class. Unlisted labels (vessels, unknown) stay background.
ASEG_TO_TISSUE = {
    # CSF: lateral, inferior lateral, 3rd, 4th and 5th ventricles, extracerebral CSF, choroid plexus
    **dict.fromkeys([4, 5, 14, 15, 24, 31, 43, 44, 63, 72], 1),
    # grey matter: cerebral and cerebellar cortex, thalamus, caudate, putamen, pallidum,
    # hippocampus, amygdala, accumbens (left and right)
    **dict.fromkeys([3, 8, 10, 11, 12, 13, 17, 18, 26, 42, 47, 49, 50, 51, 52, 53, 54, 58], 2),
    # white matter: cerebral and cerebellar WM, brainstem, ventral DC, WM hypointensities,
    # optic chiasm, corpus callosum
    **dict.fromkeys([2, 7, 16, 28, 41, 46, 60, 77, 80, 85, 251, 252, 253, 254, 255], 3),
}

# FreeSurfer's conformed orientation: axis 0 -> left, axis 1 -> inferior, axis 2 -> anterior.
LIA_1MM = np.array([[-1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1.0]])


def voxelmorph_subject(data: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    npz = np.load(data / "volumes/voxelmorph/test_scan.npz")
    aseg = npz["seg"].astype(np.int32)
    labels = np.zeros(aseg.shape, np.uint8)
    for aseg_label, tissue in ASEG_TO_TISSUE.items():
        labels[aseg == aseg_label] = tissue
    affine = LIA_1MM.copy()
    affine[:3, 3] = -LIA_1MM[:3, :3] @ (np.array(aseg.shape) / 2)  # centre the volume at the origin
    return npz["vol"].astype(np.float32), labels, affine


def mni_template(data: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    folder = data / "volumes/mni152_2009a_nilearn"
    t1 = nib.load(folder / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    image = np.asarray(t1.dataobj, dtype=np.float32) / 255.0
    gm = np.asarray(nib.load(folder / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz").dataobj, np.float32) / 255.0
    wm = np.asarray(nib.load(folder / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz").dataobj, np.float32) / 255.0
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    labels = (np.argmax(np.stack([csf, gm, wm]), axis=0) + 1).astype(np.uint8)
    labels[image <= 0] = 0  # outside the skull-stripped brain
    return image, labels, t1.affine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("data/generated/seg_brain"))
    args = parser.parse_args()
    for split, name, (image, labels, affine) in (
        ("train", "voxelmorph_t1", voxelmorph_subject(args.data)),
        ("val", "mni152_2009a_t1", mni_template(args.data)),
    ):
        write_image(args.out / split / f"{name}.nii.gz", image, affine)
        write_image(args.out / split / f"{name}_label.nii.gz", labels, affine)
        counts = {TISSUE_CLASSES[c]: int((labels == c).sum()) for c in (1, 2, 3)}
        print(f"{split}/{name}: {image.shape}, voxels per class {counts}")


if __name__ == "__main__":
    main()
