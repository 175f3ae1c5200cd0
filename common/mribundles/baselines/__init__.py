"""Classical reconstruction baselines that learned bundles are compared against."""

from mribundles.baselines.cs import DEFAULT_LAMDA, DEFAULT_RADIAL_LAMDA, l1_wavelet_radial, l1_wavelet_recon

__all__ = ["DEFAULT_LAMDA", "DEFAULT_RADIAL_LAMDA", "l1_wavelet_radial", "l1_wavelet_recon"]
