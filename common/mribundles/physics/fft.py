"""Centred, orthonormal 2D Fourier transforms on complex tensors.

"Centred" means the k-space origin sits at index (ky//2, kx//2) and the image origin at
(H//2, W//2), the convention of fastMRI, BART and sigpy. "Orthonormal" (norm="ortho") makes the
transforms unitary, so ||x|| = ||F x|| and the adjoint of `fft2c` is `ifft2c`.
"""

from __future__ import annotations

import torch


def fft2c(image: torch.Tensor) -> torch.Tensor:
    """Image -> k-space over the last two dimensions.

    Args:
        image: complex tensor (..., H, W).

    Returns:
        complex tensor (..., H, W), centred k-space, unitary scaling.
    """
    shifted = torch.fft.ifftshift(image, dim=(-2, -1))
    return torch.fft.fftshift(torch.fft.fft2(shifted, dim=(-2, -1), norm="ortho"), dim=(-2, -1))


def ifft2c(kspace: torch.Tensor) -> torch.Tensor:
    """K-space -> image over the last two dimensions; the inverse and adjoint of `fft2c`.

    Args:
        kspace: complex tensor (..., ky, kx), centred.

    Returns:
        complex tensor (..., ky, kx) in image space.
    """
    shifted = torch.fft.ifftshift(kspace, dim=(-2, -1))
    return torch.fft.fftshift(torch.fft.ifft2(shifted, dim=(-2, -1), norm="ortho"), dim=(-2, -1))
