"""The multi-coil k-space of a reconstruction network's output, which SSDU's loss compares with
the measured samples.

- Unrolled networks (`RecurrentVarNet`, `VarNet`) compute multi-coil k-space themselves and
  return its RSS; their `forward_kspace` gives the k-space.
- Magnitude networks (the image U-Net on the zero-filled RSS, `ReconResNet`) return only a
  magnitude image m. Their k-space is taken as F S m, with S the sensitivities of
  `physics.coils.estimate_sensitivities` from the calibration box of the input. Those maps are
  low-resolution coil images divided by their RSS, so they carry the object's smooth phase: the
  image in their basis is (nearly) real and non-negative, and the magnitude with phase zero is
  the right complex image up to the phase that the low-resolution image misses (fine-scale
  phase, e.g. near air-tissue boundaries). That residual is the same for every weight, so it
  raises the loss floor but does not bias the choice of weights.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from mribundles.physics.coils import estimate_sensitivities, rss, sens_expand
from mribundles.physics.fft import ifft2c
from mribundles.physics.masks import calibration_size

__all__ = ["NETWORK_INPUTS", "KspaceModel", "MagnitudeKspaceModel", "UnrolledKspaceModel", "kspace_model"]

NETWORK_INPUTS = ("kspace", "zero_filled")


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


class MagnitudeKspaceModel(KspaceModel):
    """A network that returns a magnitude image: k-space F S m with sensitivities from the
    input's calibration box (module docstring).

    Args:
        network: network(kspace, mask) -> (B, 1, ky, kx), or, with ``network_input=
            "zero_filled"``, network(zero-filled RSS (B, 1, ky, kx)) -> (B, 1, ky, kx).
        network_input: "kspace" or "zero_filled".
    """

    def __init__(self, network: nn.Module, network_input: str = "kspace"):
        super().__init__(network)
        if network_input not in NETWORK_INPUTS:
            raise ValueError(f"network_input must be one of {NETWORK_INPUTS}, got {network_input!r}")
        self.network_input = network_input

    def image(self, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.network_input == "zero_filled":
            return self.network(rss(ifft2c(kspace)).unsqueeze(1))
        return self.network(kspace, mask)

    def kspace(self, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        magnitude = self.image(kspace, mask)[:, 0].to(kspace.dtype)
        return sens_expand(magnitude, self.sensitivities(kspace, mask))

    @staticmethod
    def sensitivities(kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """complex (B, coil, ky, kx) maps from each item's calibration box (no gradient)."""
        mask = mask.to(torch.bool).expand(kspace.shape[0], *mask.shape[-2:])
        with torch.no_grad():
            return torch.stack([estimate_sensitivities(k, calibration_size(m)) for k, m in zip(kspace, mask)])


def kspace_model(network: nn.Module, network_input: str = "kspace") -> KspaceModel:
    """`UnrolledKspaceModel` for a network with ``forward_kspace``, else `MagnitudeKspaceModel`.

    Args:
        network: a reconstruction network.
        network_input: what it takes, "kspace" (k-space and mask) or "zero_filled" (the RSS
            image), as the ``input_key`` of the bundle's ``prepare_batch``.
    """
    if hasattr(network, "forward_kspace"):
        if network_input != "kspace":
            raise ValueError(f"{type(network).__name__} takes k-space, not {network_input!r}")
        return UnrolledKspaceModel(network)
    return MagnitudeKspaceModel(network, network_input)
