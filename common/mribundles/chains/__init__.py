"""Chains: separately trained, separately shareable bundles composed into one in-memory workflow."""

from mribundles.chains.pipeline import PipelineChain
from mribundles.chains.recon_seg import ReconSegChain, check_compatible, kspace_affine
from mribundles.chains.stages import ReconStage, RegStage, SegStage, SuperResStage, batch_size_for, find_bundle, optional_stage

__all__ = ["PipelineChain", "ReconSegChain", "ReconStage", "RegStage", "SegStage", "SuperResStage", "batch_size_for", "check_compatible", "find_bundle", "kspace_affine", "optional_stage"]
