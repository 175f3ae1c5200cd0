#!/usr/bin/env python
"""Build the reconstruction training and validation sets from the real volumes in ../shared/data.

Every file is fastMRI HDF5 (`kspace` (slice, coil, ky, kx) complex64, `reconstruction_rss`,
`ismrmrd_header`) whose k-space is SIMULATED from real magnitude images (smooth coil
sensitivities, smooth phase, complex Gaussian noise; see `mribundles.physics.simulate`); the
attribute `kspace_origin` says so in every file.

Training subjects: the voxelmorph T1 subject, the MNI152 2009a template, pyradiomics patient
brain1 and five ANTsPy subjects. Validation: pyradiomics patient brain2 and the sixth ANTsPy
subject, never used for training.

    python scripts/make_recon_dataset.py --data ../shared/data --out data/generated/recon_brain

With ``--sampling radial`` the same subjects become radial files (`mribundles.io.radial`): each
slice zero-padded to a square N x N (N = 256 here), ``--spokes`` golden-angle spokes of 2N
samples (`physics.simulate_radial_kspace`), and the padded image as ``reconstruction_rss``:

    python scripts/make_recon_dataset.py --sampling radial --out data/generated/recon_brain_radial
"""

from __future__ import annotations

import argparse
from pathlib import Path

import itk
import nibabel as nib
import numpy as np
import torch
from monai.transforms import SpatialPad

from mribundles.io.fastmri_h5 import minimal_ismrmrd_header, write_fastmri
from mribundles.physics.coils import rss
from mribundles.physics.fft import ifft2c
from mribundles.io.radial import write_radial
from mribundles.physics.radial import golden_angle_trajectory, simulate_radial_kspace
from mribundles.physics.simulate import simulate_multicoil_kspace


def voxelmorph_axial(data: Path, step: int) -> tuple[np.ndarray, float]:
    vol = np.load(data / "volumes/voxelmorph/test_scan.npz")["vol"]
    return _brain_slices(np.moveaxis(vol, 1, 0)[:, ::-1], step), 1.0  # axial planes, anterior up


def mni_axial(data: Path, step: int) -> tuple[np.ndarray, float]:
    t1 = nib.load(data / "volumes/mni152_2009a_nilearn/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    vol = np.asarray(t1.dataobj, dtype=np.float32)
    return _brain_slices(np.rot90(np.moveaxis(vol, 2, 0), axes=(1, 2)), step), 1.0


def pyradiomics_axial(data: Path, name: str) -> tuple[np.ndarray, float]:
    image = itk.imread(str(data / f"volumes/pyradiomics/{name}_image.nrrd"))
    return _brain_slices(itk.array_from_image(image).astype(np.float32), 1), float(image.GetSpacing()[0])


def antspy_slices(data: Path, names: list[str]) -> tuple[np.ndarray, float]:
    slices = [itk.array_from_image(itk.imread(str(data / f"volumes/antspy_slices/{n}slice.jpg"))) for n in names]
    return np.stack(slices).astype(np.float32), 1.0


def _brain_slices(volume: np.ndarray, step: int, min_fraction: float = 0.15) -> np.ndarray:
    """Every `step`-th slice whose foreground covers at least `min_fraction` of the plane."""
    volume = np.ascontiguousarray(volume, dtype=np.float32)
    foreground = (volume > 0.1 * volume.max()).mean(axis=(1, 2))
    return volume[foreground >= min_fraction][::step]


def write_subject(out: Path, name: str, images: np.ndarray, pixel_mm: float, source: str,
                  num_coils: int, snr_db: float, seed: int) -> int:
    """Simulate k-space for each slice of `images` (slice, H, W) and write one HDF5 file."""
    images = images / np.percentile(images, 99.9)
    kspace = torch.stack([
        simulate_multicoil_kspace(torch.from_numpy(np.clip(im, 0, None).copy()), num_coils, snr_db, seed + i)[0]
        for i, im in enumerate(images)
    ])
    target = rss(ifft2c(kspace))
    h, w = images.shape[1:]
    write_fastmri(
        out / f"{name}.h5",
        kspace,
        reconstruction_rss=target,
        ismrmrd_header=minimal_ismrmrd_header((w, h), (w * pixel_mm, h * pixel_mm)),
        attrs={
            "kspace_origin": "simulated from real images",
            "source": source,
            "patient_id": name,
            "acquisition": f"simulated {num_coils}-coil Cartesian, SNR {snr_db:g} dB",
            "max": float(target.max()),
            "norm": float(torch.linalg.vector_norm(target)),
        },
    )
    return len(images)


def write_radial_subject(out: Path, name: str, images: np.ndarray, source: str, num_coils: int, snr_db: float,
                         seed: int, spokes: int, size: int = 256) -> int:
    """Pad each slice of `images` (slice, H, W) to size x size and simulate its radial k-space."""
    images = np.clip(images / np.percentile(images, 99.9), 0, None).astype(np.float32)
    padded = SpatialPad((size, size))(images).numpy()  # slices as channels, padded about the centre
    trajectory = golden_angle_trajectory(spokes, 2 * size)
    kspace = torch.stack([
        simulate_radial_kspace(torch.from_numpy(im), trajectory, num_coils, snr_db, seed + i)[0] for i, im in enumerate(padded)
    ])
    write_radial(out / f"{name}.h5", kspace.reshape(len(padded), num_coils, spokes, 2 * size), trajectory.reshape(2, spokes, 2 * size),
                 reconstruction_rss=padded,
                 attrs={"kspace_origin": "simulated from real images", "source": source, "patient_id": name,
                        "acquisition": f"simulated {num_coils}-coil golden-angle radial, {spokes} spokes, SNR {snr_db:g} dB"})
    return len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / "../shared/data")
    parser.add_argument("--out", type=Path, default=Path("data/generated/recon_brain"))
    parser.add_argument("--coils", type=int, default=8)
    parser.add_argument("--snr-db", type=float, default=30.0)
    parser.add_argument("--sampling", choices=["cartesian", "radial"], default="cartesian")
    parser.add_argument("--spokes", type=int, default=64, help="radial: golden-angle spokes kept in each file")
    args = parser.parse_args()

    subjects = {
        "train": [
            ("voxelmorph_subject", *voxelmorph_axial(args.data, 4), "voxelmorph data/test_scan.npz (Apache-2.0)"),
            ("mni152_2009a", *mni_axial(args.data, 5), "MNI ICBM152 2009a via nilearn (c) MNI, Fonov et al."),
            ("pyradiomics_brain1", *pyradiomics_axial(args.data, "brain1"), "pyradiomics brain1 = TCGA-02-0003 (CC BY 3.0)"),
            ("antspy_5subjects", *antspy_slices(args.data, ["r16", "r27", "r30", "r62", "r64"]), "ANTsPy data (Apache-2.0)"),
        ],
        "val": [
            ("pyradiomics_brain2", *pyradiomics_axial(args.data, "brain2"), "pyradiomics brain2 (BSD-3)"),
            ("antspy_r85", *antspy_slices(args.data, ["r85"]), "ANTsPy data (Apache-2.0)"),
        ],
    }
    for split, entries in subjects.items():
        for index, (name, images, pixel_mm, source) in enumerate(entries):
            seed = 1000 * index + (0 if split == "train" else 500_000)
            if args.sampling == "radial":
                n = write_radial_subject(args.out / split, name, images, source, args.coils, args.snr_db, seed, args.spokes)
            else:
                n = write_subject(args.out / split, name, images, pixel_mm, source, args.coils, args.snr_db, seed)
            print(f"{split}/{name}.h5: {n} slices of {images.shape[1]}x{images.shape[2]}, {args.sampling} k-space simulated from real images")


if __name__ == "__main__":
    main()
