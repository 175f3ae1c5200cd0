"""Chains: separately trained, separately shareable bundles composed into one in-memory workflow."""

from mribundles.chains.pipeline import PipelineChain, check_compatible
from mribundles.chains.stages import ReconStage, RegStage, SegStage, SuperResStage, batch_size_for, find_bundle, optional_stage
from mribundles.io.geometry import kspace_affine  # the chains' geometry, decided once there

__all__ = ["PipelineChain", "ReconStage", "RegStage", "SegStage", "SuperResStage", "batch_size_for", "check_compatible", "find_bundle", "kspace_affine", "optional_stage"]
