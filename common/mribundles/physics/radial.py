"""Radial sampling: golden-angle trajectories, density compensation and the non-uniform
multi-coil forward operator A = NUFFT S with its adjoint, on complex torch tensors (CPU or GPU).

The non-uniform FFT is torchkbnufft's Kaiser-Bessel NUFFT (2x oversampled grid, 6-point
kernels): accurate to about 1e-3 against the direct non-uniform DFT, differentiable, and exactly
the adjoint of itself, which data consistency and the tests need.

Conventions, shared with the Cartesian core (`physics.fft`, `physics.operators`):

- A trajectory is float32 (2, K): (ky, kx) of K samples in radians per pixel, in [-pi, pi);
  the k-space sample at k of an image x is sum_r x[r] exp(-i k . (r - N//2)) / sqrt(H W),
  so a Cartesian trajectory gives `fft2c`'s values.
- A spoke is a line through the centre of k-space; its ``readout`` samples are ordered from
  -pi along its direction. Sample s of spoke p is sample ``p * readout + s`` of the trajectory,
  so radial k-space (coil, spokes, readout) flattens to (coil, K) with ``reshape``.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "GOLDEN_ANGLE",
    "RadialMultiCoilOperator",
    "density_compensation",
    "golden_angle_trajectory",
    "grid_coils",
    "grid_rss",
    "radial_sensitivities",
    "simulate_radial_kspace",
]

# Winkelmann et al. 2007: successive spokes 180 deg / golden ratio apart (about 111.25 deg) cover
# the half-plane nearly uniformly for any number of consecutive spokes.
GOLDEN_ANGLE = math.pi * 2 / (1 + math.sqrt(5))


def golden_angle_trajectory(num_spokes: int, readout: int, first_spoke: int = 0) -> torch.Tensor:
    """Spokes ``first_spoke .. first_spoke + num_spokes - 1`` of a golden-angle radial acquisition.

    Args:
        num_spokes: number of spokes (any count: the golden angle needs no fixed total).
        readout: samples per spoke; ``readout`` = N samples Nyquist-sample an N-pixel field of view.
        first_spoke: index of the first spoke, for acquisitions split across files or frames.

    Returns:
        float32 (2, num_spokes * readout): (ky, kx) in radians per pixel, in [-pi, pi).
    """
    if num_spokes < 1 or readout < 2:
        raise ValueError(f"need at least one spoke and two samples per spoke, got {num_spokes} x {readout}")
    angles = GOLDEN_ANGLE * torch.arange(first_spoke, first_spoke + num_spokes, dtype=torch.float64)
    radius = (torch.arange(readout, dtype=torch.float64) - readout // 2) * (2 * math.pi / readout)
    ky = torch.sin(angles)[:, None] * radius[None, :]
    kx = torch.cos(angles)[:, None] * radius[None, :]
    return torch.stack([ky.reshape(-1), kx.reshape(-1)]).to(torch.float32)


def density_compensation(num_spokes: int, readout: int, image_shape: tuple[int, int]) -> torch.Tensor:
    """Weights w (K,) for `golden_angle_trajectory(num_spokes, readout)` that undo the radial
    sampling density, scaled so that gridding, ``A^H (w * y)``, has unit gain.

    Each sample stands for the area of k-space nearer to it than to its neighbours, in units of
    one Cartesian sample of the image's grid ((2 pi / H) (2 pi / W)), which makes w = 1 the
    Cartesian case. ``num_spokes`` full spokes, spread evenly over 180 deg (the golden angle does
    so nearly for any count), cut the plane into 2 * num_spokes sectors: a sample at radius r
    covers pi r dk / num_spokes, with dk = 2 pi / readout its spacing along the spoke (the ramp
    filter of filtered back-projection); the centre, which every spoke samples, shares the disc
    of radius dk / 2 among them.
    """
    dk = 2 * math.pi / readout
    radius = (torch.arange(readout, dtype=torch.float64) - readout // 2).abs() * dk
    area = math.pi * radius * dk / num_spokes
    area[readout // 2] = math.pi * (dk / 2) ** 2 / num_spokes
    cartesian = (2 * math.pi / image_shape[0]) * (2 * math.pi / image_shape[1])
    return (area / cartesian).repeat(num_spokes).to(torch.float32)


class RadialMultiCoilOperator:
    """A = NUFFT S for one or a batch of slices on a shared trajectory.

    Args:
        sens_maps: complex (..., coil, H, W) coil sensitivities S.
        trajectory: float (2, K) (ky, kx) in radians per pixel (`golden_angle_trajectory`).

    ``forward``: image (..., H, W) -> k-space (..., coil, K). ``adjoint``: k-space
    (..., coil, K) -> image (..., H, W), the exact adjoint of ``forward``.
    """

    def __init__(self, sens_maps: torch.Tensor, trajectory: torch.Tensor):
        import torchkbnufft as tkbn

        if trajectory.ndim != 2 or trajectory.shape[0] != 2:
            raise ValueError(f"a 2D trajectory is (2, K), got {tuple(trajectory.shape)}")
        self.sens_maps = sens_maps
        self.trajectory = trajectory.to(device=sens_maps.device, dtype=torch.float32)
        shape = tuple(sens_maps.shape[-2:])
        self.nufft = tkbn.KbNufft(im_size=shape).to(sens_maps.device)
        self.nufft_adjoint = tkbn.KbNufftAdjoint(im_size=shape).to(sens_maps.device)
        # torchkbnufft's "ortho" divides by the oversampled grid's size; ours is the image's,
        # as for the unitary fft2c. Both directions take the same real factor: still adjoint.
        self.scale = 1 / math.sqrt(shape[0] * shape[1])

    @property
    def num_samples(self) -> int:
        return self.trajectory.shape[1]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Image (..., H, W) -> multi-coil k-space (..., coil, K)."""
        batch = image.shape[:-2]
        images = image.reshape(-1, 1, *image.shape[-2:])
        maps = self.sens_maps.expand(*batch, *self.sens_maps.shape[-3:]).reshape(images.shape[0], -1, *image.shape[-2:])
        kspace = self.nufft(images, self.trajectory, smaps=maps) * self.scale
        return kspace.reshape(*batch, maps.shape[1], self.num_samples)

    def adjoint(self, kspace: torch.Tensor) -> torch.Tensor:
        """Multi-coil k-space (..., coil, K) -> image (..., H, W): sum_c conj(S_c) NUFFT^H y_c."""
        if kspace.shape[-1] != self.num_samples:
            raise ValueError(f"k-space has {kspace.shape[-1]} samples per coil, the trajectory {self.num_samples}")
        batch, coils = kspace.shape[:-2], kspace.shape[-2]
        shape = self.sens_maps.shape[-2:]
        maps = self.sens_maps.expand(*batch, coils, *shape).reshape(-1, coils, *shape)
        image = self.nufft_adjoint(kspace.reshape(-1, coils, self.num_samples), self.trajectory, smaps=maps) * self.scale
        return image.reshape(*batch, *shape)

    def normal(self, image: torch.Tensor) -> torch.Tensor:
        """A^H A x, the operator of the normal equations."""
        return self.adjoint(self.forward(image))

    __call__ = forward


def grid_coils(kspace: torch.Tensor, trajectory: torch.Tensor, oversampling: int = 2,
               calib_radius: float | None = None) -> torch.Tensor:
    """Density-compensated gridding of every coil: (..., coil, spokes, readout) k-space on the
    (2, spokes, readout) trajectory -> (..., coil, N, N) images, N = readout / ``oversampling``.

    ``calib_radius``: keep only the samples within that many k-space pixels of the centre, with a
    cos^2 taper to zero at the edge: low-resolution coil images, from which sensitivities follow
    by dividing by their root-sum-of-squares (the centre is sampled densely by every spoke).
    """
    spokes, readout = kspace.shape[-2:]
    size = readout // oversampling
    flat = trajectory.reshape(2, -1).to(kspace.device)
    weights = density_compensation(spokes, readout, (size, size)).to(kspace.device)
    if calib_radius is not None:
        radius = flat.norm(dim=0) * size / (2 * math.pi)
        weights = weights * torch.where(radius < calib_radius, torch.cos(radius / calib_radius * math.pi / 2) ** 2, 0.0)
    unit = torch.ones(1, size, size, dtype=kspace.dtype, device=kspace.device)
    samples = kspace.flatten(-2)  # (..., coil, K)
    images = RadialMultiCoilOperator(unit, flat).adjoint(samples.reshape(-1, 1, samples.shape[-1]) * weights)
    return images.reshape(*kspace.shape[:-2], size, size)


def grid_rss(kspace: torch.Tensor, trajectory: torch.Tensor, oversampling: int = 2) -> torch.Tensor:
    """Gridding, the naive reconstruction: root-sum-of-squares of `grid_coils`, (..., N, N)."""
    from mribundles.physics.coils import rss

    return rss(grid_coils(kspace, trajectory, oversampling))


def radial_sensitivities(kspace: torch.Tensor, trajectory: torch.Tensor, oversampling: int = 2,
                         calib_radius: float = 12.0) -> torch.Tensor:
    """Coil sensitivities (..., coil, N, N) from the centre of radial k-space: the
    low-resolution coil images of `grid_coils` divided by their root-sum-of-squares."""
    from mribundles.physics.coils import rss

    low_res = grid_coils(kspace, trajectory, oversampling, calib_radius)
    return low_res / rss(low_res).unsqueeze(-3).clamp_min(1e-12)


def simulate_radial_kspace(
    image: torch.Tensor,
    trajectory: torch.Tensor,
    num_coils: int = 8,
    snr_db: float | None = 30.0,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-coil radial k-space of a real magnitude image, as `simulate_multicoil_kspace` does
    for Cartesian k-space: the same sensitivities, smooth phase and noise, sampled along
    ``trajectory`` by the NUFFT.

    The image is a pixel grid, so the samples are those of its band-limited interpolation, not of
    the continuous object it was acquired from; reconstructing them on the same grid is easier
    than reconstructing real radial data, which every figure from this simulator must say.

    Returns:
        kspace: complex64 (coil, K). sens_maps: complex64 (coil, H, W).
    """
    from mribundles.physics.simulate import add_noise, phased_image_and_coils

    complex_image, sens_maps, generator = phased_image_and_coils(image, num_coils, seed)
    kspace = RadialMultiCoilOperator(sens_maps, trajectory).forward(complex_image)
    return add_noise(kspace, snr_db, generator), sens_maps
