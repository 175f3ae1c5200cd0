"""L1-wavelet compressed sensing (Lustig et al. 2007), the classical baseline, via sigpy.

sigpy's ``L1WaveletRecon`` solves

    min_x  1/2 || M F S x - y ||_2^2 + lamda || W x ||_1

(M the mask, F the centred orthonormal FFT, S the coil sensitivities, W a Daubechies-4
wavelet transform) with accelerated proximal gradient descent. Only the glue is here: the
sensitivities, a scale-free ``lamda`` chosen per sampling setting, and the conversion to the RSS
scale of the target.

Sensitivities: sigpy's ``EspiritCalib`` (`espirit_maps`) on the largest square that the mask
samples fully around the k-space centre (sigpy only takes a centred square: a 1D mask's band of
10 central columns x 128 rows gives 10 x 10), with no eigenvalue crop and a kernel of a third of
that width (2 to 6), widened until the calibration matrix has more columns (coils x kernel^2)
than rows (kernel positions). Measured with `scripts/tune_cs.py`'s data (8 slices of real
TRAINING images as 16-coil k-space SIMULATED at 15 dB, 128 x 128, 2x oversampled readout; masks
as evaluate-recon's, centre 0.32 / R; 100 iterations), mean PSNR at the best of lamda 3e-4, 3e-3
and 3e-2, for 1D random 4x / 1D random 8x / 2D Poisson 8x (zero-filled 25.53 / 22.26 / 24.82):
- ESPIRiT, no crop: 29.24 / 22.22 / 31.53 dB (chosen).
- ESPIRiT, crop 0.5: 28.56 / 22.22 / 31.35; sigpy's default crop 0.95: 27.32 / 22.14 / 28.88. A
  crop zeroes the maps, hence the image, wherever the eigenvalue drops: in the noisy background
  that the RSS reference keeps.
- the library's low-resolution division (``sens_method="lowres"``, this baseline's maps until
  now): 28.39 / 21.58 / 30.82. On the real in-vivo test brain it fell below zero-filling (1D 4x:
  15.67 dB against 21.44 at lamda 3e-4).
- sigpy's ``JsenseRecon`` (joint estimate from every sample in a 24-wide window): with its
  default 10 inner iterations it returned NaN maps on the real brain's undersampled k-space;
  with 2 it gave 27.83 / 23.20 / 30.63, better only at 1D 8x. Not used: fragile, and worse at
  the other two settings.
- the kernel (16 coils, best lamda of each): with a 10-wide square (1D 4x), 3 gave 29.24
  against 28.72 to 28.89 for 2, 4 and 5; with a 6-wide square (2D 8x), 2 gave 31.53 against
  31.23 to 31.48; with a 4-wide one (1D 8x), 2 beat 3 by 0.7 dB. With 4 coils (80 x 112 slices simulated from the
  shipped voxelmorph slices, 1D 4x, 8-wide square) kernel 2 kept 15 of the calibration matrix's
  16 singular vectors, left no null space, and gave noise maps (CS 8.5-13.5 dB against 19.4 and
  22.6 zero-filled); kernel 4, which the width rule picks there, gave 20.9 and 24.5.
- ESPIRiT on the whole rectangular calibration box (10 x 128 for a 1D mask), which sigpy does not
  offer, gained 0.1 dB at 1D 4x and 0.8 dB at 1D 8x over the square (lamda 1e-3 to 1e-2):
  not worth a hand-written ESPIRiT.
ESPIRiT costs 0.8-1.7 s per 16-coil 128 x 128 slice on one (shared) CPU thread.

Scale: k-space is divided by the maximum of its zero-filled RSS image before sigpy sees it, and
the result multiplied back, so ``lamda`` is relative to that maximum and one value fits data of
any scale (raw scanner k-space spans orders of magnitude).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import sigpy as sp
import sigpy.mri.app as sigpy_app
import torch

from mribundles.errors import InvalidInputError
from mribundles.physics.coils import estimate_sensitivities, rss
from mribundles.physics.fft import ifft2c
from mribundles.physics.masks import calibration_size

__all__ = [
    "DEFAULT_LAMDA",
    "DEFAULT_RADIAL_LAMDA",
    "ORACLE_FACTORS",
    "SENS_METHODS",
    "TUNED_LAMDAS",
    "espirit_maps",
    "l1_wavelet_radial",
    "l1_wavelet_recon",
    "l1_wavelet_sweep",
    "mask_setting",
    "tuned_lamda",
]

# (mask dimensionality, acceleration) -> lamda relative to the zero-filled RSS maximum; other
# settings take the nearest (`tuned_lamda`). Chosen by `python scripts/tune_cs.py` (its defaults:
# 8 slices of real TRAINING images, pyradiomics brain1, voxelmorph, ANTsPy r16 and r62, as
# 16-coil k-space SIMULATED at 15 dB, 128 x 128 with a 2x oversampled readout; masks as
# evaluate-recon's, centre 0.32 / R; ESPIRiT maps; max_iter 100), best mean PSNR per setting:
#   1D random 4x: 29.24 dB at 3e-4 (zero-filled 25.53; 1e-4 26.81, 1e-3 28.71)
#   1D random 8x: 22.22 dB at 3e-2 (zero-filled 22.26; 1e-2 22.20, 1e-1 21.55; widened with
#                 `--settings random1d:8 --grid 1e-2 3e-2 1e-1 3e-1`): with a 5-line centre
#                 CS does no better than zero-filling on that data, whatever lamda
#   2D Poisson 8x: 31.53 dB at 3e-4 (zero-filled 24.82; 1e-4 28.09, 1e-3 31.28)
# At these lamdas 300 iterations changed the mean PSNR by 0.0 to -0.3 dB, and 2 or 3 wavelet
# levels instead of sigpy's maximum (4 at 128) by 0.0 to -0.9 dB: 100 iterations, default levels.
TUNED_LAMDAS: dict[tuple[str, float], float] = {("1d", 4.0): 3e-4, ("1d", 8.0): 3e-2, ("2d", 8.0): 3e-4}
DEFAULT_LAMDA = TUNED_LAMDAS[("1d", 4.0)]  # the 1D 4x value, for callers that want one number

# The oracle tries the tuned lamda times each factor and keeps the best against the reference.
ORACLE_FACTORS = (0.1, 0.3, 1.0, 3.0, 10.0)

SENS_METHODS = ("espirit", "lowres")

_CPU = sp.Device(-1)  # sigpy stays on the host: the baseline is a CPU reference


def mask_setting(mask: torch.Tensor) -> tuple[str, float]:
    """("1d" for a column mask (every row the same) else "2d", acceleration = size / samples)."""
    dims = "1d" if bool((mask == mask[:1]).all()) else "2d"
    return dims, mask.numel() / max(int(mask.sum()), 1)


def tuned_lamda(sampling: str, acceleration: float) -> float:
    """The tuned lamda of the nearest setting in ``TUNED_LAMDAS``.

    Args:
        sampling: "1d" or "2d", or a mask kind of ``physics.masks.MASK_KINDS`` (its suffix).
        acceleration: R; the setting of the same dimensionality with the closest log R is used.

    Returns:
        lamda relative to the zero-filled RSS maximum.
    """
    dims = "1d" if sampling.endswith("1d") else "2d"
    candidates = [key for key in TUNED_LAMDAS if key[0] == dims]
    nearest = min(candidates, key=lambda key: abs(math.log(key[1] / acceleration)))
    return TUNED_LAMDAS[nearest]


def _espirit_width(mask: torch.Tensor) -> int:
    """The largest width w whose w x w square, cropped as sigpy crops (start (n - w) // 2 on each
    axis), the mask samples fully: sigpy's ESPIRiT only takes a centred square."""
    ky, kx = mask.shape
    for width in range(min(calibration_size(mask)), 0, -1):
        y0, x0 = (ky - width) // 2, (kx - width) // 2
        if bool(mask[y0 : y0 + width, x0 : x0 + width].all()):
            return width
    return 0


_MIN_ESPIRIT_WIDTH = 3  # a 2x2 kernel needs a calibration square of at least 3x3


def espirit_maps(measured: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """ESPIRiT sensitivities from the fully sampled centre of an undersampled slice.

    Args:
        measured: complex64 (coil, ky, kx), zero outside ``mask``.
        mask: bool (ky, kx).

    Returns:
        complex64 (coil, ky, kx), unit RSS over coils wherever ESPIRiT's eigenvalue is non-zero
        (no crop: see the module docstring).

    Raises:
        InvalidInputError: a fully sampled centre narrower than 3, or no maps found.
    """
    width = _espirit_width(mask)
    if width < _MIN_ESPIRIT_WIDTH:
        raise InvalidInputError(f"the fully sampled centre is {width} wide; ESPIRiT needs at least {_MIN_ESPIRIT_WIDTH}x{_MIN_ESPIRIT_WIDTH}")
    # A third of the width (2 to 6), widened until the calibration matrix has more columns
    # (coils x kernel^2) than rows (kernel positions), so that it has a null space whatever the
    # data: without one ESPIRiT's eigenproblem is near the identity and its maps are noise (4
    # coils, kernel 2: see the module docstring).
    coils, kernel = measured.shape[0], max(2, width // 3)
    while kernel < min(6, width - 1) and coils * kernel**2 <= (width - kernel + 1) ** 2:
        kernel += 1
    maps = sigpy_app.EspiritCalib(measured.numpy(), calib_width=width, kernel_width=kernel, crop=0.0,
                                  device=_CPU, show_pbar=False).run()
    maps = np.nan_to_num(maps)  # sigpy divides by the first coil's phase: 0/0 where it vanishes
    if not np.any(maps):
        raise InvalidInputError(f"ESPIRiT found no sensitivities in the {width}x{width} calibration square")
    return torch.from_numpy(maps)


def _prepare(kspace: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Validate, mask and scale: -> (measured / scale, scale), scale = zero-filled RSS maximum."""
    if kspace.ndim != 3 or not kspace.is_complex():
        raise InvalidInputError(f"k-space must be complex (coil, ky, kx), got {tuple(kspace.shape)} {kspace.dtype}")
    if mask.shape != kspace.shape[-2:] or mask.dtype != torch.bool:
        raise InvalidInputError(f"mask must be bool {tuple(kspace.shape[-2:])}, got {tuple(mask.shape)} {mask.dtype}")
    measured = kspace.detach().cpu().to(torch.complex64) * mask.cpu()
    scale = float(rss(ifft2c(measured)).max())
    if not scale > 0:
        raise InvalidInputError("k-space holds no signal inside the mask")
    if min(calibration_size(mask.cpu())) == 0:
        raise InvalidInputError("the mask has no fully sampled centre to estimate coil sensitivities from")
    return measured / scale, scale


def l1_wavelet_sweep(
    kspace: torch.Tensor,
    mask: torch.Tensor,
    lamdas: Sequence[float],
    max_iter: int = 100,
    sens_method: str = "espirit",
) -> list[torch.Tensor]:
    """`l1_wavelet_recon` for several lamdas, estimating the sensitivities once.

    Returns:
        one float32 (ky, kx) RSS-scale image per lamda, in order.
    """
    if sens_method not in SENS_METHODS:
        raise ValueError(f"unknown sens_method {sens_method!r}; choose one of {', '.join(SENS_METHODS)}")
    mask = mask.cpu()
    measured, scale = _prepare(kspace, mask)
    if sens_method == "espirit" and _espirit_width(mask) >= _MIN_ESPIRIT_WIDTH:
        maps = espirit_maps(measured, mask).numpy()
    else:  # "lowres", or a centre too narrow for an ESPIRiT kernel (1D 8x on a 64-line scan)
        maps = estimate_sensitivities(measured, calibration_size(mask)).numpy()
    weights = mask.numpy().astype(np.float32)  # (ky, kx), broadcast over coils by sigpy
    images = []
    for lamda in lamdas:
        image = sigpy_app.L1WaveletRecon(measured.numpy(), maps, lamda, weights=weights, device=_CPU,
                                         max_iter=max_iter, show_pbar=False).run()
        images.append((rss(torch.from_numpy(np.asarray(maps * image[None]))) * scale).to(torch.float32))
    return images


def l1_wavelet_recon(
    kspace: torch.Tensor,
    mask: torch.Tensor,
    lamda: float | None = None,
    max_iter: int = 100,
    sens_method: str = "espirit",
) -> torch.Tensor:
    """L1-wavelet CS reconstruction of one undersampled multi-coil slice, as an RSS magnitude.

    Args:
        kspace: complex (coil, ky, kx), centred; values outside ``mask`` are ignored (zeroed).
        mask: bool (ky, kx), True where sampled; needs a fully sampled centre (ACS region).
        lamda: L1 weight relative to the maximum of the zero-filled RSS image (scale-free);
            None: `tuned_lamda` of the mask's setting (`mask_setting`).
        max_iter: proximal-gradient iterations.
        sens_method: "espirit" (`espirit_maps`) or "lowres" (``estimate_sensitivities``, kept
            for comparison).

    Returns:
        float32 (ky, kx) on the CPU: ``rss_c(S_c x)``, on the scale of the RSS of the fully
        sampled k-space (equal to ``|x|`` wherever the maps have support).

    Raises:
        InvalidInputError: wrong shapes or dtype, no fully sampled centre, all-zero data.
    """
    if lamda is None:
        if mask.ndim != 2:
            raise InvalidInputError(f"mask must be bool (ky, kx), got {tuple(mask.shape)} {mask.dtype}")
        lamda = tuned_lamda(*mask_setting(mask))
    return l1_wavelet_sweep(kspace, mask, [lamda], max_iter, sens_method)[0]


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
