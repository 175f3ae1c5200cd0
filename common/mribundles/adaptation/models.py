"""The multi-coil k-space of a reconstruction network's output, which SSDU's loss compares with
the measured samples.

Only networks that compute multi-coil k-space themselves are adapted: the unrolled networks
(`RecurrentVarNet`, `VarNet`) return its RSS, and their ``forward_kspace`` gives the k-space.

Networks that return only a magnitude image m (the image U-Net on the zero-filled RSS,
`ReconResNet`) are refused. Their k-space would have to be formed as F S m with sensitivities S
estimated from the calibration box, and on real scans that model is not faithful: with the
benchmark's masks (seed 0, point splits), the fully sampled reference scores a worse held-out
SSDU loss than the zero-filled image on the real 32-coil phantom raw k-space at 1D 4x (1.608
against 1.518) and on the real in-vivo brain at 1D 4x, 1D 8x and Poisson 8x (2.114, 2.290,
2.132 against 1.819, 1.870, 1.948; an all-zero image scores 2.0), and giving both images the
phase of the zero-filled SENSE combination still leaves the reference worse at 1D 4x and 8x
(`scripts/magnitude_ssdu_check.py` prints these losses).
Lowering that loss moved the U-Net bundle away from the truth: on the phantom its PSNR inside
the head fell from 21.13 to 20.36 dB at 1D 4x and from 22.20 to 15.80 dB at Poisson 8x while
its held-out loss fell.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from mribundles.errors import InvalidInputError

__all__ = ["KspaceModel", "UnrolledKspaceModel", "kspace_model"]


class KspaceModel(ABC):
    """A reconstruction network seen through its k-space.

    ``image(kspace, mask)`` is what the network returns at inference, float (B, 1, ky, kx);
    ``kspace(kspace, mask)`` the multi-coil k-space of that reconstruction, complex
    (B, coil, ky, kx). Inputs: complex (B, coil, ky, kx) k-space, zero where not sampled, and
    a bool (B, ky, kx) mask. ``network`` is the module whose weights adapt.
    """

    def __init__(self, network: nn.Module):
        self.network = network

    def image(self, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.network(kspace, mask)

    @abstractmethod
    def kspace(self, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """complex (B, coil, ky, kx): the multi-coil k-space of ``image(kspace, mask)``."""


class UnrolledKspaceModel(KspaceModel):
    """A network with ``forward_kspace(kspace, mask)`` (RecurrentVarNet, VarNet)."""

    def kspace(self, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.network.forward_kspace(kspace, mask)


def kspace_model(network: nn.Module, network_input: str = "kspace") -> UnrolledKspaceModel:
    """The network seen through its own multi-coil k-space (``forward_kspace``).

    Args:
        network: a reconstruction network.
        network_input: what the bundle feeds it, the ``input_key`` of its ``prepare_batch``;
            a network with ``forward_kspace`` takes "kspace" (k-space and mask).

    Raises:
        InvalidInputError: a network without ``forward_kspace``, which returns only a magnitude
            image (module docstring), or one fed anything but k-space.
    """
    name = type(network).__name__
    if not hasattr(network, "forward_kspace"):
        raise InvalidInputError(
            f"SSDU adaptation needs the network's multi-coil k-space; {name} returns only a magnitude image, whose "
            "k-space cannot be formed faithfully from estimated coil maps (on real scans the fully sampled image "
            "scores worse than zero-filling on held-out samples)")
    if network_input != "kspace":
        raise InvalidInputError(f"SSDU adaptation feeds {name} k-space, but the bundle feeds it {network_input!r}")
    return UnrolledKspaceModel(network)
