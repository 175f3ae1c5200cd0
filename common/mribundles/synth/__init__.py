"""The training data engine: images from real volumes and from real label maps, through a
physical simulation of coils, phase, noise and sampling, drawn afresh every iteration and seeded.
Reconstruction, segmentation, registration and super-resolution draw from the same generator.
A test scan never enters it."""

from mribundles.synth.acquisition import AcquisitionRanges, correlated_noise, random_coil_array, simulate_acquisition
from mribundles.synth.anatomy import DEFAULT_EXCLUDE, AnatomyBank, AnatomySlice
from mribundles.synth.dataset import SyntheticKspaceDataset
from mribundles.synth.labels import CONTRASTS, FREESURFER_TISSUE, TISSUE_NAMES, load_label_map, sulcal_csf, synthesize_image, tissue_labels
from mribundles.synth.registration import SyntheticPairDataset
from mribundles.synth.segmentation import SyntheticSegmentationDataset, degrade_resolution
from mribundles.synth.spatial import random_matrix, sample, smooth_displacement, warp_grid

__all__ = [
    "AcquisitionRanges",
    "AnatomyBank",
    "AnatomySlice",
    "CONTRASTS",
    "DEFAULT_EXCLUDE",
    "FREESURFER_TISSUE",
    "SyntheticKspaceDataset",
    "SyntheticPairDataset",
    "SyntheticSegmentationDataset",
    "TISSUE_NAMES",
    "correlated_noise",
    "degrade_resolution",
    "load_label_map",
    "random_coil_array",
    "random_matrix",
    "sample",
    "simulate_acquisition",
    "smooth_displacement",
    "sulcal_csf",
    "synthesize_image",
    "tissue_labels",
    "warp_grid",
]
