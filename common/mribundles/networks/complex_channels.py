"""The one boundary between complex tensors and the real channels a convolution needs."""

from __future__ import annotations

import torch


def complex_to_channels(x: torch.Tensor) -> torch.Tensor:
    """Complex (B, C, H, W) -> real (B, 2C, H, W): real parts, then imaginary parts."""
    return torch.cat([x.real, x.imag], dim=1)


def channels_to_complex(x: torch.Tensor) -> torch.Tensor:
    """Real (B, 2C, H, W) -> complex (B, C, H, W); the inverse of `complex_to_channels`."""
    half = x.shape[1] // 2
    return torch.complex(x[:, :half], x[:, half:])
