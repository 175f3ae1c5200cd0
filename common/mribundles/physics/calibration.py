"""The autocalibration (ACS) region of a sampling mask, found on the device without host syncs."""

from __future__ import annotations

import torch


def calibration_mask(mask: torch.Tensor) -> torch.Tensor:
    """The centred box of k-space that the mask samples contiguously around its centre.

    The box spans the run of sampled points through the k-space centre (ky//2, kx//2) along the
    central row and along the central column. For a 1D column mask this is every row times the
    fully sampled central columns; for a 2D mask with a fully sampled calibration square, the
    square. Computed with cumulative products so it stays on the device and in the graph of a
    batched forward pass.

    Args:
        mask: bool (..., ky, kx), True where sampled.

    Returns:
        bool (..., ky, kx), True inside the calibration box.
    """
    ky, kx = mask.shape[-2], mask.shape[-1]
    cy, cx = ky // 2, kx // 2
    row, col = mask[..., cy, :].long(), mask[..., :, cx].long()
    half_x = _run_length(row[..., cx:]), _run_length(row[..., : cx + 1].flip(-1))
    half_y = _run_length(col[..., cy:]), _run_length(col[..., : cy + 1].flip(-1))
    ys = torch.arange(ky, device=mask.device) - cy
    xs = torch.arange(kx, device=mask.device) - cx
    inside_y = (ys > -half_y[1][..., None]) & (ys < half_y[0][..., None])
    inside_x = (xs > -half_x[1][..., None]) & (xs < half_x[0][..., None])
    return inside_y[..., :, None] & inside_x[..., None, :]


def _run_length(line: torch.Tensor) -> torch.Tensor:
    """Number of leading ones along the last dimension."""
    return line.cumprod(-1).sum(-1)
