"""Classical reconstruction baselines that learned bundles are compared against."""

from mribundles.baselines.cs import DEFAULT_LAMDA, l1_wavelet_recon

__all__ = ["DEFAULT_LAMDA", "l1_wavelet_recon"]
