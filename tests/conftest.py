"""Shared fixtures: tiny fastMRI-layout data simulated from the shipped real image slices."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from mribundles.io import minimal_ismrmrd_header, write_fastmri
from mribundles.physics.coils import rss
from mribundles.physics.fft import ifft2c
from mribundles.physics.simulate import simulate_multicoil_kspace
from mribundles.sample_data import path as sample_path

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    """Under pytest-xdist, split the cores between the workers, and the bundle runs they start,
    instead of letting every worker's torch use them all: on 2 cores two workers of two threads
    each spend their time waiting for each other."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        threads = max(1, (os.cpu_count() or 1) // int(workers))
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # inherited by subprocesses


def write_simulated_volume(path: Path, images: np.ndarray, num_coils: int = 4, seed: int = 0) -> torch.Tensor:
    """Simulate multi-coil k-space for (slice, H, W) real images and write a fastMRI .h5."""
    kspace = torch.stack(
        [simulate_multicoil_kspace(torch.from_numpy(im), num_coils, 30.0, seed + i)[0] for i, im in enumerate(images)]
    )
    h, w = images.shape[1:]
    write_fastmri(
        path,
        kspace,
        reconstruction_rss=rss(ifft2c(kspace)),
        ismrmrd_header=minimal_ismrmrd_header((w, h), (w, h)),
        attrs={"kspace_origin": "simulated from real images"},
    )
    return kspace


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests (their volumes are small: threads only add overhead
    there), restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_recon_dataset(tmp_path_factory) -> Path:
    """train/ and val/ folders, each one .h5 of two 4-coil 80x112 slices of a real T1 brain."""
    root = tmp_path_factory.mktemp("recon_brain")
    slices = np.load(sample_path("voxelmorph_t1_axial_4slices_80x112.npy"))
    write_simulated_volume(root / "train" / "subject_a.h5", slices[:2], seed=0)
    write_simulated_volume(root / "val" / "subject_b.h5", slices[2:], seed=100)
    return root


@pytest.fixture(scope="session")
def tiny_synth_root(tmp_path_factory) -> Path:
    """A training data engine folder (``../shared/data``'s layout) holding only the shipped real
    whole-head label map."""
    root = tmp_path_factory.mktemp("synth_data")
    (root / "labels" / "synthseg").mkdir(parents=True)
    (root / "labels" / "synthseg" / "training_seg_01.nii.gz").symlink_to(sample_path("synthseg_training_seg_01.nii.gz"))
    return root
