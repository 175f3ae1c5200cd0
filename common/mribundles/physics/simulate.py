"""Multi-coil k-space simulated from a real magnitude image.

Real raw multi-coil k-space is scarce; magnitude images of real brains are not. We give an image
what a receive array adds: smooth coil sensitivities (one Gaussian-profile coil per position on a
ring around the object, with a linear phase that mimics the coil's position), a smooth background
phase, and complex Gaussian noise at a chosen SNR. Everything produced this way is labelled
"simulated from real images" wherever it is stored or reported.
"""

from __future__ import annotations

import math

import torch

from mribundles.physics.coils import sens_expand


def coil_sensitivities(num_coils: int, shape: tuple[int, int], width: float = 0.6) -> torch.Tensor:
    """Smooth birdcage-like sensitivities, normalised to sum_c |S_c|^2 = 1 everywhere.

    Coil c sits at angle 2 pi c / num_coils on a circle of radius 1 around a field of view
    spanning [-1, 1]^2; its magnitude falls off as a Gaussian of the distance (`width` in those
    units) and its phase turns with the coil angle.

    Returns:
        complex64 (coil, H, W).
    """
    y, x = _grid(shape)
    angles = 2 * math.pi * torch.arange(num_coils, dtype=torch.float64) / num_coils
    cy, cx = torch.sin(angles)[:, None, None], torch.cos(angles)[:, None, None]
    magnitude = torch.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * width**2))
    phase = angles[:, None, None] + math.pi * (cx * x + cy * y) / 2
    maps = magnitude * torch.exp(1j * phase)
    maps = maps / torch.sqrt((maps.abs() ** 2).sum(0, keepdim=True))
    return maps.to(torch.complex64)


def smooth_phase(shape: tuple[int, int], generator: torch.Generator, max_order: int = 2) -> torch.Tensor:
    """A random smooth phase map exp(i phi), phi a low-order polynomial of up to +-pi.

    Real images are not real-valued: B0 inhomogeneity and receive phase leave a slowly varying
    phase, which a network trained on real-valued images would never see.

    Returns:
        complex64 (H, W) of unit magnitude.
    """
    y, x = _grid(shape)
    phi = torch.zeros(shape, dtype=torch.float64)
    for i in range(max_order + 1):
        for j in range(max_order + 1 - i):
            coeff = (torch.rand((), generator=generator, dtype=torch.float64) * 2 - 1) * math.pi / (i + j + 1)
            phi = phi + coeff * y**i * x**j
    return torch.exp(1j * phi).to(torch.complex64)


def off_resonance_phase(
    shape: tuple[int, int], pixel_mm: tuple[float, float], generator: torch.Generator, std_rad: float,
    correlation_mm: float,
) -> torch.Tensor:
    """A random off-resonance phase map exp(i phi): phi = 2 pi gamma dB0 TE, with dB0 a smooth
    random field that varies on the scale of ``correlation_mm``.

    A gradient-echo image carries the phase its spins gained from the local field during TE.
    Susceptibility differences (air in the sinuses and ear canals, bone, veins) bend the field on
    a scale of millimetres to centimetres, so at 3 T and a TE of 5-20 ms the phase turns by
    several radians across a head, and fastest near those boundaries. A low-order polynomial
    (`smooth_phase`) cannot turn that fast: k-space simulated with it keeps its energy near the
    centre, so undersampling aliases less than on a real scan.

    phi is Gaussian noise on a grid of ``correlation_mm`` spacing, upsampled bicubically and
    scaled to a standard deviation of ``std_rad`` over the field of view.

    Returns:
        complex64 (H, W) of unit magnitude.
    """
    coarse = [max(2, math.ceil(n * p / correlation_mm) + 1) for n, p in zip(shape, pixel_mm)]
    noise = torch.randn((1, 1, *coarse), generator=generator, dtype=torch.float32)
    phi = torch.nn.functional.interpolate(noise, size=tuple(shape), mode="bicubic", align_corners=True)[0, 0]
    phi = phi * (std_rad / phi.std().clamp_min(1e-6))
    return torch.exp(1j * phi).to(torch.complex64)


def simulate_multicoil_kspace(
    image: torch.Tensor,
    num_coils: int = 8,
    snr_db: float | None = 30.0,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fully sampled multi-coil k-space of a real magnitude image.

    Args:
        image: real (H, W) magnitude image.
        num_coils: number of receive coils.
        snr_db: signal-to-noise ratio of the k-space in dB (signal power over noise power,
            averaged over all samples); None for no noise.
        seed: seeds the phase and the noise.

    Returns:
        kspace: complex64 (coil, H, W), centred, unitary FFT scaling.
        sens_maps: complex64 (coil, H, W), the sensitivities used.
    """
    complex_image, sens_maps, generator = phased_image_and_coils(image, num_coils, seed)
    return add_noise(sens_expand(complex_image, sens_maps), snr_db, generator), sens_maps


def phased_image_and_coils(image: torch.Tensor, num_coils: int, seed: int):
    """What every simulator starts from: the real (H, W) ``image`` with a smooth phase, the
    ``num_coils`` sensitivities (coil, H, W), and the generator (seeded by ``seed``) that drew
    the phase and then draws the noise."""
    if image.ndim != 2 or image.is_complex():
        raise ValueError(f"expected a real (H, W) image, got {tuple(image.shape)} {image.dtype}")
    generator = torch.Generator().manual_seed(seed)
    shape = tuple(image.shape)
    return image.to(torch.float32) * smooth_phase(shape, generator), coil_sensitivities(num_coils, shape), generator


def add_noise(kspace: torch.Tensor, snr_db: float | None, generator: torch.Generator) -> torch.Tensor:
    """``kspace`` plus complex Gaussian noise at ``snr_db`` (mean signal power over noise power)."""
    if snr_db is None:
        return kspace
    noise_power = (kspace.abs() ** 2).mean() / 10 ** (snr_db / 10)
    # Complex torch.randn has unit variance: 1/2 in the real and 1/2 in the imaginary part.
    noise = torch.randn(kspace.shape, generator=generator, dtype=torch.complex64)
    return kspace + noise * torch.sqrt(noise_power)


def _grid(shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinates in [-1, 1] along each axis, (H, 1) and (1, W)."""
    y = torch.linspace(-1, 1, shape[0], dtype=torch.float64)[:, None]
    x = torch.linspace(-1, 1, shape[1], dtype=torch.float64)[None, :]
    return y, x
