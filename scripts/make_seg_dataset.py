#!/usr/bin/env python
"""Build the tissue-segmentation training and evaluation volumes from the real data in ../shared/data.

Labels: 0 background, 1 CSF, 2 grey matter, 3 white matter (`mribundles.synth.TISSUE_NAMES`).
The bundle trains mostly on images synthesised from the 20 SynthSeg label maps
(`mribundles.synth.SyntheticSegmentationDataset`), and on one real scan:

- `train/voxelmorph_t1`: the voxelmorph T1 subject (a real scan) with its FreeSurfer aseg mapped to
  the three tissues by the library's one mapping (`mribundles.synth.tissue_labels`). The npz
  carries no affine; its axes are FreeSurfer's conformed LIA at 1 mm (left hemisphere labels lie
  at high axis-0 indices, the brainstem at high axis-1 indices), which is the affine we write.
  Its aseg labels no sulcal CSF (label 24 holds 1,306 voxels): the sulci that a closing of the
  labelled brain spans, where the skull-stripped image has signal, become CSF
  (`mribundles.synth.sulcal_csf`), so that its CSF means what the synthesised labels' and the
  template's CSF mean.

Every evaluation volume is real and never trained on:

- `val/mni152_2009a_t1`: the MNI152 2009a template (152 subjects averaged) with its grey- and
  white-matter probability maps; inside the skull-stripped brain, each voxel takes the most
  probable of CSF (the remainder, 1 - GM - WM, so sulcal CSF included), GM and WM.
- `val/mni152_2009a_t2like`: the same template with its contrast inverted inside the brain
  (1 - T1: CSF bright, white matter dark, as in a T2-weighted scan); same labels.
- `val/mni152_2009a_4mm`: the template as 4 mm thick axial slices (each 4 mm slab averaged,
  `physics.degrade.thick_slices`), resampled back onto its 1 mm grid (linear), as a viewer
  reslices a thick-slice scan; same labels.

Label definitions differ at the margins (FreeSurfer counts the pallidum and deep nuclei as grey
matter; the MNI maps give them partial probabilities), which caps the Dice a perfect segmenter
of one could reach on the other; the model card says so.

    python scripts/make_seg_dataset.py --data ../shared/data --out data/generated/seg_brain
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from torch.nn import functional as F

from mribundles.io.images import write_image
from mribundles.physics.degrade import crop_to_multiple, thick_slices
from mribundles.synth import TISSUE_NAMES, sulcal_csf, tissue_labels

# FreeSurfer's conformed orientation: axis 0 -> left, axis 1 -> inferior, axis 2 -> anterior.
LIA_1MM = np.array([[-1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1.0]])


def voxelmorph_subject(data: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    npz = np.load(data / "volumes/voxelmorph/test_scan.npz")
    aseg = npz["seg"].astype(np.int32)
    image = npz["vol"].astype(np.float32)
    tissue = tissue_labels(torch.from_numpy(aseg))
    labels = torch.where(torch.from_numpy(image) > 0, sulcal_csf(tissue), tissue).numpy()
    affine = LIA_1MM.copy()
    affine[:3, 3] = -LIA_1MM[:3, :3] @ (np.array(aseg.shape) / 2)  # centre the volume at the origin
    return image, labels, affine


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


def t2_like(image: np.ndarray) -> np.ndarray:
    """The contrast inverted inside the brain (1 - T1), background left at zero."""
    return np.where(image > 0, 1.0 - image, 0.0).astype(np.float32)


def thick_axial(image: np.ndarray, thickness: int = 4) -> np.ndarray:
    """``thickness`` mm axial slabs (axis 2 of a RAS-like grid) averaged, then resampled back
    onto the 1 mm grid by linear interpolation; the volume keeps its shape (edge slices that do
    not fill a slab are cropped before averaging and come back by edge padding)."""
    volume = torch.from_numpy(image)
    low = thick_slices(crop_to_multiple(volume, (1, 1, thickness)), thickness, axis=2)
    high = F.interpolate(low[None, None], scale_factor=(1, 1, thickness), mode="trilinear", align_corners=False)[0, 0]
    pad = image.shape[2] - high.shape[2]
    return np.pad(high.numpy(), ((0, 0), (0, 0), (0, pad)), mode="edge").astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("data/generated/seg_brain"))
    args = parser.parse_args()
    mni, mni_labels, mni_affine = mni_template(args.data)
    volumes = {
        "train/voxelmorph_t1": voxelmorph_subject(args.data),
        "val/mni152_2009a_t1": (mni, mni_labels, mni_affine),
        "val/mni152_2009a_t2like": (t2_like(mni), mni_labels, mni_affine),
        "val/mni152_2009a_4mm": (thick_axial(mni), mni_labels, mni_affine),
    }
    for name, (image, labels, affine) in volumes.items():
        write_image(args.out / f"{name}.nii.gz", image, affine)
        write_image(args.out / f"{name}_label.nii.gz", labels, affine)
        counts = {TISSUE_NAMES[c]: int((labels == c).sum()) for c in (1, 2, 3)}
        print(f"{name}: {image.shape}, voxels per class {counts}")
    print(f"wrote {len(volumes)} image/label pairs under {args.out} (train/, val/)")


if __name__ == "__main__":
    main()
