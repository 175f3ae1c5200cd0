"""MRI physics as pure functions and small classes (see each module's docstring for shapes)."""

from mribundles.physics.calibration import calibration_mask
from mribundles.physics.coils import estimate_sensitivities, rss, sens_expand, sens_reduce
from mribundles.physics.degrade import (
    crop_to_multiple,
    highres_affine,
    lowres_affine,
    thick_slices,
    truncate_kspace,
)
from mribundles.physics.fft import fft2c, ifft2c
from mribundles.physics.interpolate import INTERPOLATION_MODES, interpolate, sinc_interpolate
from mribundles.physics.masks import MASK_KINDS, calibration_size, make_mask, mask_from_kspace
from mribundles.physics.operators import MultiCoilOperator
from mribundles.physics.radial import (
    GOLDEN_ANGLE,
    RadialMultiCoilOperator,
    density_compensation,
    golden_angle_trajectory,
    simulate_radial_kspace,
)
from mribundles.physics.simulate import (
    add_noise,
    coil_sensitivities,
    off_resonance_phase,
    simulate_multicoil_kspace,
    smooth_phase,
)

__all__ = [
    "GOLDEN_ANGLE",
    "INTERPOLATION_MODES",
    "MASK_KINDS",
    "MultiCoilOperator",
    "RadialMultiCoilOperator",
    "add_noise",
    "calibration_mask",
    "calibration_size",
    "coil_sensitivities",
    "crop_to_multiple",
    "density_compensation",
    "estimate_sensitivities",
    "fft2c",
    "golden_angle_trajectory",
    "highres_affine",
    "ifft2c",
    "interpolate",
    "lowres_affine",
    "make_mask",
    "mask_from_kspace",
    "off_resonance_phase",
    "rss",
    "sens_expand",
    "sens_reduce",
    "sinc_interpolate",
    "simulate_multicoil_kspace",
    "simulate_radial_kspace",
    "smooth_phase",
    "thick_slices",
    "truncate_kspace",
]
