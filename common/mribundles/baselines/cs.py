"""L1-wavelet compressed sensing (Lustig et al. 2007), the classical baseline, via sigpy.

sigpy's ``L1WaveletRecon`` solves

    min_x  1/2 || M F S x - y ||_2^2 + lamda || W x ||_1

(M the mask, F the centred orthonormal FFT, S the coil sensitivities, W a Daubechies-4
wavelet transform) with accelerated proximal gradient descent. Only the glue is here: the
sensitivities, a scale-free ``lamda`` and the conversion to the RSS scale of the target.

Sensitivities: the library's ``estimate_sensitivities`` (low-resolution division on the whole
fully sampled calibration box found by ``calibration_size``, no support threshold), not
sigpy's ``EspiritCalib``. Maps that vanish outside the object (ESPIRiT's eigenvalue crop, or the
estimator's default 5 % threshold) force a zero background, while the RSS target keeps its
noise there; on 4 training slices at 4x that cost 0.1-0.2 SSIM (0.58-0.77 against 0.78-0.84
without a threshold), below zero-filling on 3 of the 4.
Measured on a training slice (256x256, 8 coils, random1d masks, one CPU thread, loaded machine):
ESPIRiT took 1.6-3.6 s per slice against 0.03 s, gave the same SSIM within 0.004 at 4x, and
at 8x (10 calibration columns, so a 10x10 square: sigpy's ESPIRiT only takes a square box)
returned all-zero maps and a NaN image. ``sens_method="espirit"`` is kept for comparison.

Scale: k-space is divided by the maximum of its zero-filled RSS image before sigpy sees it, and
the result multiplied back, so ``lamda`` is relative to that maximum and one value fits data of
any scale (raw scanner k-space spans orders of magnitude).
"""

from __future__ import annotations

import numpy as np
import sigpy as sp
import sigpy.mri.app as sigpy_app
import torch

from mribundles.errors import InvalidInputError
from mribundles.physics.coils import estimate_sensitivities, rss
from mribundles.physics.fft import ifft2c
from mribundles.physics.masks import calibration_size

__all__ = ["DEFAULT_LAMDA", "DEFAULT_RADIAL_LAMDA", "SENS_METHODS", "l1_wavelet_radial", "l1_wavelet_recon"]

# Chosen by `python scripts/tune_cs.py` (grid search maximising the mean SSIM over 4x and 8x
# random1d masks on training slices of data/generated/recon_brain/train/*.h5, k-space simulated
# from real brain images, 4 slices; max_iter 50): mean SSIM 0.716 (4x 0.833, 8x 0.600).
# Relative to the zero-filled RSS maximum.
DEFAULT_LAMDA = 3e-4

SENS_METHODS = ("lowres", "espirit")

_CPU = sp.Device(-1)  # sigpy stays on the host: the baseline is a CPU reference


def l1_wavelet_recon(
    kspace: torch.Tensor,
    mask: torch.Tensor,
    lamda: float = DEFAULT_LAMDA,
    max_iter: int = 100,
    sens_method: str = "lowres",
) -> torch.Tensor:
    """L1-wavelet CS reconstruction of one undersampled multi-coil slice, as an RSS magnitude.

    Args:
        kspace: complex (coil, ky, kx), centred; values outside ``mask`` are ignored (zeroed).
        mask: bool (ky, kx), True where sampled; needs a fully sampled centre (ACS region).
        lamda: L1 weight relative to the maximum of the zero-filled RSS image (scale-free).
        max_iter: proximal-gradient iterations.
        sens_method: "lowres" (``estimate_sensitivities``) or "espirit" (sigpy's ESPIRiT on
            the largest centred square inside the calibration box).

    Returns:
        float32 (ky, kx) on the CPU: ``rss_c(S_c x)``, on the scale of the RSS of the fully
        sampled k-space (equal to ``|x|`` wherever the maps have support).

    Raises:
        InvalidInputError: wrong shapes or dtype, no fully sampled centre, all-zero data.
    """
    if kspace.ndim != 3 or not kspace.is_complex():
        raise InvalidInputError(f"k-space must be complex (coil, ky, kx), got {tuple(kspace.shape)} {kspace.dtype}")
    if mask.shape != kspace.shape[-2:] or mask.dtype != torch.bool:
        raise InvalidInputError(f"mask must be bool {tuple(kspace.shape[-2:])}, got {tuple(mask.shape)} {mask.dtype}")
    if sens_method not in SENS_METHODS:
        raise ValueError(f"unknown sens_method {sens_method!r}; choose one of {', '.join(SENS_METHODS)}")
    mask = mask.cpu()
    measured = kspace.detach().cpu().to(torch.complex64) * mask
    scale = float(rss(ifft2c(measured)).max())
    if not scale > 0:
        raise InvalidInputError("k-space holds no signal inside the mask")
    measured = measured / scale
    calib = calibration_size(mask)
    if min(calib) == 0:
        raise InvalidInputError("the mask has no fully sampled centre to estimate coil sensitivities from")

    y = measured.numpy()
    if sens_method == "lowres":
        maps = estimate_sensitivities(measured, calib).numpy()
    else:
        maps = sigpy_app.EspiritCalib(y, calib_width=min(calib), device=_CPU, show_pbar=False).run()
        if not np.any(maps):
            raise InvalidInputError(f"ESPIRiT found no sensitivities in the {min(calib)}-wide calibration square")
    weights = mask.numpy().astype(np.float32)  # (ky, kx), broadcast over coils by sigpy
    image = sigpy_app.L1WaveletRecon(
        y, maps, lamda, weights=weights, device=_CPU, max_iter=max_iter, show_pbar=False
    ).run()
    coil_images = torch.from_numpy(np.asarray(maps * image[None]))
    return (rss(coil_images) * scale).to(torch.float32)


# Chosen by `python scripts/tune_cs.py --sampling radial --data data/generated/recon_brain_radial/train`
# and, as the best lay at that grid's top, again with `--grid 0.1 0.3 1`: the mean SSIM over 64
# and 32 golden-angle spokes on 4 training slices (k-space simulated from real brain images;
# max_iter 50) peaks at 0.760 (64 spokes 0.806, 32 spokes 0.713; 1e-2 gave 0.421, 0.3 gave 0.656).
# Relative to the gridding's RSS maximum.
DEFAULT_RADIAL_LAMDA = 0.1


def l1_wavelet_radial(
    kspace: torch.Tensor,
    trajectory: torch.Tensor,
    lamda: float = DEFAULT_RADIAL_LAMDA,
    max_iter: int = 50,
    oversampling: int = 2,
    calib_radius: float = 12.0,
) -> torch.Tensor:
    """L1-wavelet CS reconstruction of one radial multi-coil slice, as an RSS magnitude.

    The same problem as `l1_wavelet_recon` with sigpy's NUFFT in place of the masked FFT
    (its coordinates are ours in pixels, k N / 2 pi), the density compensation as data weights
    (a preconditioner: it speeds up convergence without changing the minimiser's data fit much)
    and the sensitivities that `ReconResNet` estimates from the centre of k-space.

    Args:
        kspace: complex (coil, spokes, readout) along ``trajectory`` (2, spokes, readout).
        lamda: L1 weight relative to the maximum of the gridded RSS image (scale-free).

    Returns:
        float32 (N, N) on the CPU, N = readout / ``oversampling``.
    """
    from mribundles.physics.radial import density_compensation, grid_rss, radial_sensitivities

    if kspace.ndim != 3 or not kspace.is_complex() or trajectory.shape != (2, *kspace.shape[-2:]):
        raise InvalidInputError(f"radial k-space (coil, spokes, readout) and trajectory (2, spokes, readout) expected, "
                                f"got {tuple(kspace.shape)} {kspace.dtype} and {tuple(trajectory.shape)}")
    kspace, trajectory = kspace.detach().cpu().to(torch.complex64), trajectory.detach().cpu()
    spokes, readout = kspace.shape[-2:]
    size = readout // oversampling
    scale = float(grid_rss(kspace, trajectory, oversampling).max())
    if not scale > 0:
        raise InvalidInputError("radial k-space holds no signal")
    maps = radial_sensitivities(kspace, trajectory, oversampling, calib_radius)
    coord = (trajectory.reshape(2, -1).T * size / (2 * np.pi)).numpy()
    weights = density_compensation(spokes, readout, (size, size)).numpy()[None]
    y = (kspace.reshape(kspace.shape[0], -1) / scale).numpy()
    image = sigpy_app.L1WaveletRecon(y, maps.numpy(), lamda, weights=weights, coord=coord, device=_CPU,
                                     max_iter=max_iter, show_pbar=False).run()
    coil_images = torch.from_numpy(np.asarray(maps.numpy() * image[None]))
    return (rss(coil_images) * scale).to(torch.float32)
