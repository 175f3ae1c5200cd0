"""Deformable registration: affine pre-alignment, random diffeomorphisms for training pairs, and
the loss of the VoxelMorph-style bundle. Displacement fields (DDFs) follow MONAI's `Warp`:
(B, 3, X, Y, Z) in voxels of the fixed grid, sampled as ``moving(x + ddf(x))``."""

from mribundles.registration.affine import affine_align, affine_ddf
from mribundles.registration.deformation import random_diffeomorphism
from mribundles.registration.loss import RegistrationLoss
from mribundles.registration.refine import Refinement, refine_velocity

__all__ = ["Refinement", "RegistrationLoss", "affine_align", "affine_ddf", "random_diffeomorphism", "refine_velocity"]
