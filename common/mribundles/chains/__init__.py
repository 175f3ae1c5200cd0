"""Chains: separately trained, separately shareable bundles composed into one in-memory workflow."""

from mribundles.chains.recon_seg import ReconSegChain, check_compatible, kspace_affine
from mribundles.chains.stages import ReconStage, SegStage, batch_size_for, find_bundle

__all__ = ["ReconSegChain", "ReconStage", "SegStage", "batch_size_for", "check_compatible", "find_bundle", "kspace_affine"]
