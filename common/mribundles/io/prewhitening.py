"""Coil noise prewhitening: decorrelate a receive array's coils with the covariance of a noise
pre-scan (ISMRMRD's ``ACQ_IS_NOISE_MEASUREMENT`` readouts, `mribundles.io.ismrmrd`)."""

from __future__ import annotations

import torch

from mribundles.errors import InvalidInputError


def noise_covariance(noise: torch.Tensor) -> torch.Tensor:
    """(coil, samples) complex noise -> (coil, coil) sample covariance N N^H / (samples - 1)."""
    noise = torch.as_tensor(noise).to(torch.complex128)
    centred = noise - noise.mean(dim=1, keepdim=True)
    return centred @ centred.conj().T / max(noise.shape[1] - 1, 1)


def prewhiten(kspace: torch.Tensor, noise: torch.Tensor, variance_ratio: float = 1.0) -> torch.Tensor:
    """Decorrelate the coils: L^-1 k, where L L^H is the noise covariance (Cholesky).

    Args:
        kspace: complex (coil, ...) or (slice, coil, readout, phase-encode).
        noise: (coil, samples) noise pre-scan of the same coils.
        variance_ratio: noise variance of the data over that of the noise scan (the noise
            readouts' dwell time over the image readouts' when their bandwidths differ).

    Returns:
        complex64 tensor of ``kspace``'s shape whose noise has unit variance, uncorrelated.
    """
    kspace = torch.as_tensor(kspace)
    coil_axis = 1 if kspace.ndim == 4 else 0
    if noise.shape[0] != kspace.shape[coil_axis]:
        raise InvalidInputError(f"noise has {noise.shape[0]} coils but k-space has {kspace.shape[coil_axis]}")
    covariance = noise_covariance(noise) * float(variance_ratio)
    factor, info = torch.linalg.cholesky_ex(covariance)
    if int(info) != 0:
        raise InvalidInputError("the noise covariance is not positive definite (a dead or duplicated coil?)")
    coils_first = kspace.movedim(coil_axis, 0).to(torch.complex128)
    flat = coils_first.reshape(coils_first.shape[0], -1)
    white = torch.linalg.solve_triangular(factor, flat, upper=False)
    return white.reshape(coils_first.shape).movedim(0, coil_axis).to(torch.complex64)
