"""Metrics: reconstruction quality exactly as fastMRI defines it, and inside a head mask."""

from mribundles.metrics.recon import nmse, psnr, ssim
from mribundles.metrics.region import head_mask, masked_psnr

__all__ = ["head_mask", "masked_psnr", "nmse", "psnr", "ssim"]
