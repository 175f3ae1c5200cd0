"""Statistics that compare simulated k-space with real raw k-space.

Four properties that a training simulation must get right for a network to transfer to real
scans, each measured the same way on any fully sampled (coil, ky, kx) k-space:

- ``background_ratio``: mean RSS outside the object over mean RSS inside it; the noise floor
  that real, whole-field-of-view scans carry and skull-stripped simulations lack.
- ``coil_smoothness``: the share of the energy of the coil-sensitivity estimates (coil image /
  RSS, where the object is bright enough for the ratio not to be noise: above 20 % of its
  99th percentile) within the central eighth of their spectrum; near 1 for smooth maps.
- ``intensity_quantiles``: quantiles of the RSS inside the object, relative to its 99th
  percentile: the shape of the intensity histogram.
- ``phase_roughness``: the mean absolute phase step (rad) between neighbouring pixels inside the
  object, of the image combined with the phases of low-resolution coil images (so that the
  receive phases cancel and the object's own phase remains). A fast-turning phase spreads
  k-space energy away from the centre, so undersampling aliases more: an engine whose phase is
  smoother than real scans' trains networks on an easier problem than the one they meet.

The object is `metrics.head_mask` of the RSS at 15 % of its smoothed maximum.
"""

from __future__ import annotations

import torch

from mribundles.metrics.region import head_mask
from mribundles.physics.coils import rss
from mribundles.physics.fft import fft2c, ifft2c

__all__ = ["QUANTILES", "kspace_statistics"]

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def kspace_statistics(kspace: torch.Tensor) -> dict:
    """The three statistics of fully sampled ``kspace``, complex (coil, ky, kx).

    Returns:
        {"background_ratio": float, "coil_smoothness": float,
         "intensity_quantiles": list of floats at ``QUANTILES``}.
    """
    coil_images = ifft2c(kspace.to(torch.complex64))
    image = rss(coil_images)
    inside = head_mask(image, threshold=0.15, sigma=max(1.0, min(image.shape) / 64))
    background = image[~inside].mean() if (~inside).any() else torch.tensor(0.0)
    values = image[inside]
    bright = inside & (image > 0.2 * torch.quantile(values, 0.99))
    maps = torch.where(bright, coil_images / image.clamp_min(1e-12), 0)
    spectrum = fft2c(maps).abs() ** 2
    ky, kx = spectrum.shape[-2:]
    centre = spectrum[:, ky // 2 - ky // 16 : ky // 2 + ky // 16 + 1, kx // 2 - kx // 16 : kx // 2 + kx // 16 + 1]
    quantiles = torch.quantile(values / torch.quantile(values, 0.99), torch.tensor(QUANTILES))
    return {
        "background_ratio": float(background / values.mean()),
        "coil_smoothness": float(centre.sum() / spectrum.sum()),
        "intensity_quantiles": [float(q) for q in quantiles],
        "phase_roughness": _phase_roughness(kspace.to(torch.complex64), coil_images, inside),
    }


def _phase_roughness(kspace: torch.Tensor, coil_images: torch.Tensor, inside: torch.Tensor) -> float:
    """Mean |phase step| (rad) between neighbours inside the object: the coil images are combined
    with the conjugates of their low-resolution versions (the central 16 x 16 samples), which
    carry the receive phases and the slowest part of the object's."""
    centre = torch.zeros_like(kspace)
    ky, kx = kspace.shape[-2:]
    rows, cols = slice(max(ky // 2 - 8, 0), ky // 2 + 8), slice(max(kx // 2 - 8, 0), kx // 2 + 8)
    centre[:, rows, cols] = kspace[:, rows, cols]
    phase = torch.angle((ifft2c(centre).conj() * coil_images).sum(0))
    steps = []
    for axis in (0, 1):
        step = torch.angle(torch.exp(1j * torch.diff(phase, dim=axis)))  # wrapped to (-pi, pi]
        both = inside.narrow(axis, 1, inside.shape[axis] - 1) & inside.narrow(axis, 0, inside.shape[axis] - 1)
        steps.append(step[both].abs())
    return float(torch.cat(steps).mean())
