"""MRI physics as pure functions and small classes (see each module's docstring for shapes)."""

from mribundles.physics.calibration import calibration_mask
from mribundles.physics.coils import estimate_sensitivities, rss, sens_expand, sens_reduce
from mribundles.physics.fft import fft2c, ifft2c
from mribundles.physics.masks import MASK_KINDS, calibration_size, make_mask, mask_from_kspace
from mribundles.physics.operators import MultiCoilOperator
from mribundles.physics.simulate import coil_sensitivities, simulate_multicoil_kspace, smooth_phase

__all__ = [
    "MASK_KINDS",
    "MultiCoilOperator",
    "calibration_mask",
    "calibration_size",
    "coil_sensitivities",
    "estimate_sensitivities",
    "fft2c",
    "ifft2c",
    "make_mask",
    "mask_from_kspace",
    "rss",
    "sens_expand",
    "sens_reduce",
    "simulate_multicoil_kspace",
    "smooth_phase",
]
