"""Small real data shipped with the library, so the demo and the tests run out of the box.

See NOTICE.md beside this file for every file's source and license.
"""

from __future__ import annotations

from pathlib import Path

SAMPLE_DIR = Path(__file__).resolve().parent
MULTISLICE_DEMO = "mni152_2009a_multislice_4coil_kspace.h5"
THICK_SLICE_DEMO = "voxelmorph_t1_thick_slices_kspace.h5"
RADIAL_DEMO = "mni152_2009a_radial_8coil_kspace.h5"


def path(name: str) -> str:
    """Absolute path of a shipped sample file."""
    file = SAMPLE_DIR / name
    if not file.is_file():
        raise FileNotFoundError(f"no sample file {name!r} in {SAMPLE_DIR}")
    return str(file)


def multislice_kspace_demo(cache_dir: str | None = None, slice_step: int = 2, num_coils: int = 4) -> str:
    """The chains' demo input: multi-slice multi-coil k-space SIMULATED from the shipped MNI152
    2009a T1 template (an average of 152 real scans), fully sampled.

    Axial planes every ``slice_step`` mm through the brain, each turned into ``num_coils``-coil
    k-space by `physics.simulate_multicoil_kspace` (smooth sensitivities and phase, 30 dB noise,
    seeded by the plane index), written once as fastMRI HDF5 with the volume's ``affine`` and a
    ``kspace_origin`` attribute saying so. About 100 MB of k-space would bloat the repository, while
    the template is 1.6 MB; the simulation is deterministic, so every run gets the same bytes.
    The file goes to ``cache_dir`` (default ``$MRIBUNDLES_CACHE`` or ``~/.cache/mribundles``).
    """
    import nibabel as nib
    import numpy as np

    out = _cache_dir(cache_dir) / f"step{slice_step}_coils{num_coils}" / MULTISLICE_DEMO
    if out.is_file():
        return str(out)
    template = nib.load(path("mni152_2009a_t1.nii.gz"))
    volume = np.asarray(template.dataobj, dtype=np.float32) / 255.0
    brain_planes = np.flatnonzero((volume > 0).mean(axis=(0, 1)) > 0.02)
    planes = np.arange(brain_planes[0], brain_planes[-1] + 1, slice_step)
    affine = template.affine @ np.array(
        [[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, float(slice_step), float(planes[0])], [0, 0, 0, 1.0]]
    )
    origin = (
        f"SIMULATED from the real MNI152 2009a T1 template (average of 152 real scans): axial planes "
        f"{planes[0]}-{planes[-1]} step {slice_step}, {num_coils} coils, smooth phase, 30 dB noise"
    )
    write_simulated_kspace(out, [volume[:, :, z] for z in planes], [int(z) for z in planes], affine, origin, num_coils)
    return str(out)


def thick_slice_kspace_demo(cache_dir: str | None = None, thickness: int = 4, num_coils: int = 4) -> str:
    """The full pipeline's demo input: multi-slice multi-coil k-space of ``thickness`` mm axial
    slices, SIMULATED from the shipped real voxelmorph T1 subject (1 mm), fully sampled.

    The subject is reoriented to RAS and each slice is the mean of ``thickness`` consecutive
    1 mm planes (`physics.thick_slices`, a box slice profile), so the file's ``affine`` is
    `physics.lowres_affine` of the subject's: a super-resolution stage restores the 1 mm grid
    that a registration to the MNI template then uses. Each slice becomes ``num_coils``-coil
    k-space as in `multislice_kspace_demo`; made once into the cache folder.
    """
    import nibabel as nib
    import numpy as np
    import torch

    from mribundles.physics.degrade import crop_to_multiple, lowres_affine, thick_slices

    out = _cache_dir(cache_dir) / f"thick{thickness}_coils{num_coils}" / THICK_SLICE_DEMO
    if out.is_file():
        return str(out)
    subject = nib.as_closest_canonical(nib.load(path("voxelmorph_t1.nii.gz")))
    volume = torch.from_numpy(np.asarray(subject.dataobj, dtype=np.float32) / 255.0)
    slabs = thick_slices(crop_to_multiple(volume, (1, 1, thickness)), thickness, axis=2).numpy()
    origin = (
        f"SIMULATED from the real voxelmorph T1 subject (1 mm, reoriented to RAS): {slabs.shape[2]} axial slices "
        f"{thickness} mm thick (means of {thickness} planes), {num_coils} coils, smooth phase, 30 dB noise"
    )
    planes = [slabs[:, :, z] for z in range(slabs.shape[2])]
    write_simulated_kspace(out, planes, list(range(len(planes))), lowres_affine(subject.affine, (1, 1, thickness)), origin, num_coils)
    return str(out)


def radial_kspace_demo(cache_dir: str | None = None, spokes: int = 64, num_coils: int = 8, size: int = 256) -> str:
    """The radial bundle's demo input: golden-angle radial ``num_coils``-coil k-space SIMULATED
    from three axial planes (z = 60, 75, 90) of the shipped real MNI152 2009a T1 template,
    each zero-padded to ``size`` x ``size`` (1 mm pixels), ``spokes`` spokes of 2 x ``size``
    samples (`physics.simulate_radial_kspace`, 30 dB noise, seeded by the plane), with the
    padded planes as ``reconstruction_rss``. Written once as an `io.radial` file into the cache
    folder (see `multislice_kspace_demo`).
    """
    import nibabel as nib
    import numpy as np
    import torch

    from mribundles.io.radial import write_radial
    from mribundles.physics.radial import golden_angle_trajectory, simulate_radial_kspace

    out = _cache_dir(cache_dir) / f"radial{spokes}_coils{num_coils}_{size}" / RADIAL_DEMO
    if out.is_file():
        return str(out)
    volume = np.asarray(nib.load(path("mni152_2009a_t1.nii.gz")).dataobj, dtype=np.float32) / 255.0
    planes = [60, 75, 90]
    from monai.transforms import SpatialPad

    # rows along y, as the Cartesian demos; zero-padded about the centre to a square
    images = SpatialPad((size, size))(np.stack([volume[:, :, z].T for z in planes])).numpy()
    trajectory = golden_angle_trajectory(spokes, 2 * size)
    kspace = torch.stack([simulate_radial_kspace(torch.from_numpy(im), trajectory, num_coils, seed=z)[0]
                          for im, z in zip(images, planes)])
    origin = (f"SIMULATED from the real MNI152 2009a T1 template (average of 152 real scans): axial planes {planes}, "
              f"zero-padded to {size}x{size}, {spokes} golden-angle spokes, {num_coils} coils, smooth phase, 30 dB noise")
    write_radial(out, kspace.reshape(len(planes), num_coils, spokes, 2 * size), trajectory.reshape(2, spokes, 2 * size),
                 reconstruction_rss=images, attrs={"kspace_origin": origin})
    return str(out)


def _cache_dir(cache_dir: str | None) -> Path:
    import os

    return Path(cache_dir or os.environ.get("MRIBUNDLES_CACHE") or Path.home() / ".cache" / "mribundles")


def write_simulated_kspace(out: Path, planes: list, seeds: list[int], affine, origin: str, num_coils: int) -> None:
    """Each (x, y) plane -> ``num_coils``-coil k-space (`physics.simulate_multicoil_kspace`, seeded
    per plane), written as fastMRI HDF5 with the (column, row, slice) -> RAS ``affine`` and the
    ``kspace_origin`` attribute. K-space rows (ky) run along y and columns (kx) along x."""
    import numpy as np
    import torch

    from mribundles.io.fastmri_h5 import write_fastmri
    from mribundles.physics.simulate import simulate_multicoil_kspace

    kspace = torch.stack([
        simulate_multicoil_kspace(torch.from_numpy(np.ascontiguousarray(plane.T)), num_coils=num_coils, seed=seed)[0]
        for plane, seed in zip(planes, seeds)
    ])
    write_fastmri(out, kspace, attrs={"affine": np.asarray(affine, dtype=np.float64), "kspace_origin": origin})
