"""Small real data shipped with the library, so the demo and the tests run out of the box.

See NOTICE.md beside this file for every file's source and license.
"""

from __future__ import annotations

from pathlib import Path

SAMPLE_DIR = Path(__file__).resolve().parent


def path(name: str) -> str:
    """Absolute path of a shipped sample file."""
    file = SAMPLE_DIR / name
    if not file.is_file():
        raise FileNotFoundError(f"no sample file {name!r} in {SAMPLE_DIR}")
    return str(file)


MULTISLICE_DEMO = "mni152_2009a_multislice_4coil_kspace.h5"


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
    import os

    import nibabel as nib
    import numpy as np
    import torch

    from mribundles.io.fastmri_h5 import write_fastmri
    from mribundles.physics.simulate import simulate_multicoil_kspace

    folder = Path(cache_dir or os.environ.get("MRIBUNDLES_CACHE") or Path.home() / ".cache" / "mribundles")
    out = folder / f"step{slice_step}_coils{num_coils}" / MULTISLICE_DEMO
    if out.is_file():
        return str(out)
    template = nib.load(path("mni152_2009a_t1.nii.gz"))
    volume = np.asarray(template.dataobj, dtype=np.float32) / 255.0
    brain_planes = np.flatnonzero((volume > 0).mean(axis=(0, 1)) > 0.02)
    planes = np.arange(brain_planes[0], brain_planes[-1] + 1, slice_step)
    # k-space rows (ky) run along the template's y axis, columns (kx) along x: plane = vol[:, :, z].T
    kspace = torch.stack([
        simulate_multicoil_kspace(torch.from_numpy(volume[:, :, z].T.copy()), num_coils=num_coils, seed=int(z))[0]
        for z in planes
    ])
    affine = template.affine @ np.array(
        [[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, float(slice_step), float(planes[0])], [0, 0, 0, 1.0]]
    )
    write_fastmri(
        out,
        kspace,
        attrs={
            "affine": affine,
            "kspace_origin": (
                f"SIMULATED from the real MNI152 2009a T1 template (average of 152 real scans): axial planes "
                f"{planes[0]}-{planes[-1]} step {slice_step}, {num_coils} coils, smooth phase, 30 dB noise"
            ),
        },
    )
    return str(out)
