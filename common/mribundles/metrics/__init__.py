"""Metrics: reconstruction quality exactly as fastMRI defines it."""

from mribundles.metrics.recon import nmse, psnr, ssim

__all__ = ["nmse", "psnr", "ssim"]
