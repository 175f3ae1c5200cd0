"""Receive sensitivities of circular surface loops, from the Biot-Savart law.

A receive coil's sensitivity at a point is, by reciprocity, the transverse magnetic field that a
unit current in the coil would make there (Hoult 2000): with the main field along z,

    S(r) ~ B_x(r) - i B_y(r),      B(r) = sum over loop segments of dl x (r - r_l) / |r - r_l|^3

(constants dropped: maps are scaled together afterwards). This gives what real head arrays show
and a Gaussian profile does not: a steep fall-off near the coil, a phase that winds around it,
and overlap that depends on the loops' sizes and positions, including loops above or below the
imaged plane.

Shapes: points are (..., 3) in millimetres; loops are given by centres (coil, 3), unit normals
(coil, 3) and radii (coil,). Maps are complex64 (coil, ...).
"""

from __future__ import annotations

import math

import torch

__all__ = ["loop_sensitivities", "plane_points"]


def loop_sensitivities(
    points: torch.Tensor,
    centres: torch.Tensor,
    normals: torch.Tensor,
    radii: torch.Tensor,
    segments: int = 32,
) -> torch.Tensor:
    """Biot-Savart receive sensitivities B_x - i B_y of circular loops at ``points``.

    Args:
        points: float (..., 3), positions in mm.
        centres: float (coil, 3), loop centres in mm.
        normals: float (coil, 3), loop axes (normalised here).
        radii: float (coil,), loop radii in mm.
        segments: straight segments per loop (32 keeps the error below 1 % a radius away).

    Returns:
        complex64 (coil, ...), in units of 1 / mm (unit current, constants dropped).
    """
    dtype = torch.float32
    points, centres = points.to(dtype), centres.to(dtype)
    normals = normals.to(dtype) / normals.to(dtype).norm(dim=-1, keepdim=True)
    radii = radii.to(dtype)
    # Two unit vectors spanning each loop's plane.
    helper = torch.where(normals[:, 2:3].abs() < 0.9, torch.tensor([0.0, 0.0, 1.0]), torch.tensor([1.0, 0.0, 0.0]))
    u = torch.linalg.cross(normals, helper)
    u = u / u.norm(dim=-1, keepdim=True)
    v = torch.linalg.cross(normals, u)
    angles = torch.arange(segments + 1, dtype=dtype) * (2 * math.pi / segments)
    ring = torch.cos(angles)[None, :, None] * u[:, None] + torch.sin(angles)[None, :, None] * v[:, None]
    vertices = centres[:, None] + radii[:, None, None] * ring  # (coil, segments + 1, 3)
    mids, dl = (vertices[:, 1:] + vertices[:, :-1]) / 2, vertices[:, 1:] - vertices[:, :-1]

    flat = points.reshape(-1, 3)
    field = torch.zeros(centres.shape[0], flat.shape[0], 3, dtype=dtype)
    for s in range(segments):  # one segment at a time keeps memory at (coil, points, 3)
        r = flat[None] - mids[:, s, None]
        dist3 = r.norm(dim=-1, keepdim=True).clamp_min(1e-3) ** 3
        field += torch.linalg.cross(dl[:, s, None].expand_as(r), r) / dist3
    maps = torch.complex(field[..., 0], -field[..., 1])
    return maps.reshape(centres.shape[0], *points.shape[:-1])


def plane_points(shape: tuple[int, int], spacing: tuple[float, float]) -> torch.Tensor:
    """Centres of the pixels of an (H, W) image in the plane z = 0, in mm, centred on the
    image centre: rows along y, columns along x.

    Returns:
        float32 (H, W, 3).
    """
    y = (torch.arange(shape[0], dtype=torch.float32) - (shape[0] - 1) / 2) * spacing[0]
    x = (torch.arange(shape[1], dtype=torch.float32) - (shape[1] - 1) / 2) * spacing[1]
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    return torch.stack([xx, yy, torch.zeros_like(xx)], dim=-1)
