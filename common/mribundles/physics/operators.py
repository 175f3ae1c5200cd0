"""The multi-coil Cartesian forward operator A = M F S and its adjoint A^H = S^H F^H M.

One operator serves data consistency, the compressed-sensing baseline, the simulator and the
tests (adjointness <A x, y> = <x, A^H y>).
"""

from __future__ import annotations

import torch

from mribundles.physics.coils import sens_expand, sens_reduce


class MultiCoilOperator:
    """A = M F S for one or a batch of slices.

    Args:
        sens_maps: complex (..., coil, ky, kx) coil sensitivities S.
        mask: bool (..., ky, kx) or anything broadcastable to the k-space shape without the coil
            dimension; True where k-space is sampled (M).
    """

    def __init__(self, sens_maps: torch.Tensor, mask: torch.Tensor):
        self.sens_maps = sens_maps
        # A coil axis of length one lets the mask broadcast over coils.
        self.mask = mask.to(torch.bool).unsqueeze(-3)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Image (..., ky, kx) -> sampled multi-coil k-space (..., coil, ky, kx), zeros elsewhere."""
        return sens_expand(image, self.sens_maps) * self.mask

    def adjoint(self, kspace: torch.Tensor) -> torch.Tensor:
        """Multi-coil k-space (..., coil, ky, kx) -> image (..., ky, kx)."""
        return sens_reduce(kspace * self.mask, self.sens_maps)

    def normal(self, image: torch.Tensor) -> torch.Tensor:
        """A^H A x, the operator of the normal equations."""
        return self.adjoint(self.forward(image))

    __call__ = forward
