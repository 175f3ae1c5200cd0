"""Quality of a displacement field: how much it folds and how irregular it is.

Both are defined on the Jacobian determinant of the map ``x -> x + u(x)``, with derivatives by
central differences (one-sided at the borders, `torch.gradient`), in voxel units of the grid
the field lives on (the fixed image's). They are the figures Learn2Reg and the VoxelMorph papers
report: the share of voxels where the map folds (``det J <= 0``) and the standard deviation of
``log det J`` (determinants clipped at 1e-9 first, as Learn2Reg does).
"""

from __future__ import annotations

import torch

__all__ = ["folding_fraction", "jacobian_determinant", "log_jacobian_std", "registration_report"]


def jacobian_determinant(ddf: torch.Tensor) -> torch.Tensor:
    """ddf (B, 3, X, Y, Z) in voxels -> det J (B, X, Y, Z)."""
    rows = []
    for component in range(3):
        grads = torch.gradient(ddf[:, component], dim=(1, 2, 3))
        rows.append(torch.stack([g + (1.0 if axis == component else 0.0) for axis, g in enumerate(grads)], dim=-1))
    return torch.linalg.det(torch.stack(rows, dim=-2))


def _masked(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return values.flatten() if mask is None else values[mask.reshape(values.shape).bool()]


def folding_fraction(ddf: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Share of voxels (inside ``mask``, (B, X, Y, Z) or broadcastable, if given) with det J <= 0."""
    return float((_masked(jacobian_determinant(ddf), mask) <= 0).double().mean())


def log_jacobian_std(ddf: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Standard deviation of log(max(det J, 1e-9)) over the voxels (inside ``mask``)."""
    return float(_masked(jacobian_determinant(ddf), mask).clamp_min(1e-9).log().std())


def registration_report(
    ddf: torch.Tensor,
    mask: torch.Tensor | None = None,
    warped_label: torch.Tensor | None = None,
    fixed_label: torch.Tensor | None = None,
    class_names: list[str] | tuple[str, ...] = (),
) -> dict[str, float]:
    """Every quality figure of one registration, as plain floats.

    Args:
        ddf: (3, X, Y, Z) displacement of the deformable step, voxels of the fixed grid.
        mask: (X, Y, Z) or (1, X, Y, Z) voxels that count for the Jacobian figures (the fixed brain).
        warped_label, fixed_label: (1, X, Y, Z) integer maps on the fixed grid, classes
            1..len(class_names); when both are given, Dice and HD95 (voxels of the fixed grid,
            which is 1 mm in the bundle) per class as MONAI computes them.

    Returns:
        ``{"folding_percent", "log_jacobian_std", "dice_<class>", "hd95_<class>", "dice_mean"}``.
    """
    from monai.metrics import compute_dice, compute_hausdorff_distance
    from monai.networks.utils import one_hot

    ddf = ddf[None].double()
    report = {
        "folding_percent": 100.0 * folding_fraction(ddf, mask),
        "log_jacobian_std": log_jacobian_std(ddf, mask),
    }
    if warped_label is not None and fixed_label is not None:
        n = len(class_names) + 1
        pred = one_hot(warped_label[None].long().to(fixed_label.device), n)
        true = one_hot(fixed_label[None].long(), n)
        dice = compute_dice(pred, true, include_background=False)[0]
        hd95 = compute_hausdorff_distance(pred, true, include_background=False, percentile=95)[0]
        for name, d, h in zip(class_names, dice.tolist(), hd95.tolist()):
            key = name.lower().replace(" ", "_")
            report[f"dice_{key}"], report[f"hd95_{key}"] = d, h
        report["dice_mean"] = float(dice.mean())
    return report
