#!/usr/bin/env python
"""Choose the L1-wavelet baseline's lamda per sampling setting, on k-space SIMULATED from real
TRAINING images (never on a test scan).

Cartesian (default): axial slices of the real training subjects in ../shared/data (pyradiomics
patient brain1, whole head with scalp; the voxelmorph subject; ANTsPy subjects r16 and r62; the
same training subjects as `scripts/make_recon_dataset.py`), without that folder the four
voxelmorph slices shipped in `mribundles.sample_data`. Each slice is given the geometry of a raw
Cartesian scan, a ``--matrix`` of phase-encode columns (the last axis, where 1D masks fall) by a
readout ``--readout-oversampling`` times oversampled (the slice is resized to matrix/oversampling
rows and zero-padded to matrix, as raw k-space read without removing the oversampling), then
becomes ``--coils``-coil k-space by `mribundles.physics.simulate_multicoil_kspace` at
``--snr-db``. For every setting (mask kind and acceleration, centre fraction 0.32 / R as
`mribundles evaluate-recon`; the mask seed is the slice's index) each lamda of the grid is run
with `mribundles.baselines.cs.l1_wavelet_sweep` and scored with the library's fastMRI PSNR and
SSIM against the RSS of the fully sampled k-space (each slice against its own maximum). The
lamda with the best mean PSNR per setting is printed as a `TUNED_LAMDAS` line for
common/mribundles/baselines/cs.py. lamda is relative to the zero-filled RSS maximum, so the
chosen values apply to data of any scale.

    python scripts/tune_cs.py [--shared-data ../shared/data] [--settings random1d:4 random1d:8 poisson2d:8]

``--data FOLDER`` tunes on the slices of fastMRI-layout .h5 files instead (e.g. the simulated
training set of `make_recon_dataset.py`, data/generated/recon_brain/train).

``--sampling radial`` tunes the radial baseline (`l1_wavelet_radial`, DEFAULT_RADIAL_LAMDA) on
data/generated/recon_brain_radial/train (`make_recon_dataset.py --sampling radial`), at 64 and
32 golden-angle spokes, against each file's reference image, by the mean SSIM:

    python scripts/tune_cs.py --sampling radial --data data/generated/recon_brain_radial/train
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from mribundles.baselines.cs import l1_wavelet_radial, l1_wavelet_sweep
from mribundles.io import kspace_shape, load_kspace
from mribundles.io.radial import read_radial_slice
from mribundles.metrics import psnr, ssim
from mribundles.physics import ifft2c, make_mask, rss, simulate_multicoil_kspace
from mribundles.transforms import GridRadiald

REPO = Path(__file__).resolve().parents[1]
GRID = (3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
SETTINGS = ("random1d:4", "random1d:8", "poisson2d:8")
RADIAL_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
RADIAL_SPOKES = (64, 32)


def training_images(shared_data: Path) -> tuple[list[np.ndarray], str]:
    """Real (H, W) training slices, float, and where they come from."""
    if not shared_data.is_dir():
        from mribundles.sample_data import path

        slices = np.load(path("voxelmorph_t1_axial_4slices_80x112.npy"))
        return list(slices), "the 4 voxelmorph slices shipped in mribundles.sample_data"
    from make_recon_dataset import antspy_slices, pyradiomics_axial, voxelmorph_axial

    def evenly(volume: np.ndarray, n: int) -> list[np.ndarray]:
        return [volume[i] for i in np.linspace(0, len(volume) - 1, n + 2)[1:-1].round().astype(int)]

    images = evenly(pyradiomics_axial(shared_data, "brain1")[0], 4)
    images += evenly(voxelmorph_axial(shared_data, 1)[0], 2)
    images += list(antspy_slices(shared_data, ["r16", "r62"])[0])
    return images, f"{shared_data}: pyradiomics brain1 (4 slices), voxelmorph subject (2), ANTsPy r16, r62"


def raw_geometry(image: np.ndarray, matrix: int, oversampling: int) -> torch.Tensor:
    """(H, W) -> (matrix, matrix): resized to (matrix / oversampling, matrix), zero-padded along
    the rows (the readout) to matrix, scaled to its 99.9th percentile."""
    image = torch.from_numpy(np.clip(np.ascontiguousarray(image, dtype=np.float32), 0, None))
    rows = matrix // oversampling
    resized = torch.nn.functional.interpolate(image[None, None], size=(rows, matrix), mode="area")[0, 0]
    padded = torch.zeros(matrix, matrix)
    start = (matrix - rows) // 2
    padded[start : start + rows] = resized
    return padded / torch.quantile(padded[padded > 0], 0.999)


def cartesian_kspace(args) -> list[torch.Tensor]:
    """The tuning slices as fully sampled complex64 (coil, ky, kx) k-space."""
    if args.data is not None:
        picks = training_slices(args.data, args.slices_per_file)
        print(f"{len(picks)} slices of {args.data}: " + ", ".join(f"{Path(f).stem}[{i}]" for f, i in picks))
        return [load_kspace(file, slice_index=index) for file, index in picks]
    images, source = training_images(args.shared_data)
    print(f"{len(images)} slices from {source}; k-space SIMULATED: {args.coils} coils, {args.snr_db:g} dB, "
          f"{args.matrix}x{args.matrix}, readout oversampled {args.readout_oversampling}x")
    return [simulate_multicoil_kspace(raw_geometry(im, args.matrix, args.readout_oversampling), args.coils,
                                      args.snr_db, seed=i)[0] for i, im in enumerate(images)]


def cartesian_cases(kspaces: list[torch.Tensor], settings: list[str], max_iter: int):
    """(setting, target, zero-filled, reconstruct(lamdas) -> images) for each slice and setting."""
    for index, kspace in enumerate(kspaces):
        target = rss(ifft2c(kspace))
        for setting in settings:
            kind, acceleration = setting.split(":")
            acc = float(acceleration)
            mask = make_mask(kind, kspace.shape[-2:], acc, 0.32 / acc, index)
            yield (setting, target, rss(ifft2c(kspace * mask)),
                   lambda lams, m=mask, k=kspace: l1_wavelet_sweep(k, m, lams, max_iter))


def radial_cases(picks: list[tuple[str, int]], max_iter: int):
    """The same for the first 64 and 32 spokes of each radial slice; the naive image is gridding."""
    for file, index in picks:
        kspace, trajectory, target = read_radial_slice(file, index, reference=True)
        for spokes in RADIAL_SPOKES:
            k, t = kspace[:, :spokes], trajectory[:, :spokes]
            gridded = GridRadiald()({"kspace": k, "trajectory": t})["zero_filled"][0]
            yield (f"{spokes} spokes", target, gridded,
                   lambda lams, k=k, t=t: [l1_wavelet_radial(k, t, lam, max_iter) for lam in lams])


def training_slices(folder: Path, per_file: int) -> list[tuple[str, int]]:
    """(file, slice) pairs: `per_file` evenly spaced interior slices of every .h5 file."""
    picks = []
    for path in sorted(folder.glob("*.h5")):
        n = kspace_shape(path)[0]
        picks.extend((str(path), int(i)) for i in np.linspace(0, n - 1, per_file + 2)[1:-1].round())
    if not picks:
        raise SystemExit(f"no .h5 files in {folder}; run python scripts/make_recon_dataset.py")
    return picks


def score(cases, grid) -> tuple[dict, dict]:
    """Per (setting, lamda) and per setting ("naive"): lists of (PSNR, SSIM), one per slice."""
    scores, naive = {}, {}
    for setting, target, naive_image, reconstruct in cases:
        naive.setdefault(setting, []).append((psnr(target, naive_image), ssim(target, naive_image)))
        for lam, image in zip(grid, reconstruct(grid)):
            scores.setdefault((setting, lam), []).append((psnr(target, image), ssim(target, image)))
    return scores, naive


def report(scores: dict, naive: dict, grid, by: str) -> dict[str, float]:
    """Print mean PSNR / SSIM per setting and lamda; return the best lamda per setting."""
    column = 0 if by == "psnr" else 1
    best = {}
    for setting, values in naive.items():
        print(f"\n{setting} ({len(values)} slices)   {'PSNR':>7} {'SSIM':>7}")
        print(f"{'naive':>12}   {np.mean([v[0] for v in values]):7.2f} {np.mean([v[1] for v in values]):7.4f}")
        means = {lam: np.mean(scores[(setting, lam)], axis=0) for lam in grid}
        for lam, (p, s) in means.items():
            print(f"{lam:12.0e}   {p:7.2f} {s:7.4f}")
        best[setting] = max(means, key=lambda lam: means[lam][column])
        if best[setting] in (grid[0], grid[-1]):
            print("  (best at the grid's edge: widen --grid)")
    return best


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sampling", choices=["cartesian", "radial"], default="cartesian")
    parser.add_argument("--shared-data", type=Path, default=REPO / "../shared/data",
                        help="folder of the real volumes (default ../shared/data beside the repository)")
    parser.add_argument("--data", type=Path, default=None,
                        help="tune on the slices of these fastMRI-layout .h5 files instead (radial: required)")
    parser.add_argument("--slices-per-file", type=int, default=1, help="with --data")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), help="mask kind:acceleration (Cartesian)")
    parser.add_argument("--matrix", type=int, default=128)
    parser.add_argument("--readout-oversampling", type=int, default=2)
    parser.add_argument("--coils", type=int, default=16)
    parser.add_argument("--snr-db", type=float, default=15.0)
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument("--grid", type=float, nargs="+", default=None, help="lamda values to try")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    if args.sampling == "radial":
        if args.data is None:
            raise SystemExit("--sampling radial needs --data (see make_recon_dataset.py --sampling radial)")
        grid = tuple(args.grid or RADIAL_GRID)
        scores, naive = score(radial_cases(training_slices(args.data, args.slices_per_file), args.max_iter), grid)
        best = report(scores, naive, grid, by="ssim")
        mean_ssim = {lam: np.mean([np.mean(scores[(s, lam)], axis=0)[1] for s in naive]) for lam in grid}
        print(f"\nchosen radial lamda (best mean SSIM over both spoke counts): {max(mean_ssim, key=mean_ssim.get):g}")
    else:
        grid = tuple(args.grid or GRID)
        scores, naive = score(cartesian_cases(cartesian_kspace(args), args.settings, args.max_iter), grid)
        best = report(scores, naive, grid, by="psnr")
        entries = []
        for setting, lam in best.items():
            kind, acceleration = setting.split(":")
            entries.append(f'("{"1d" if kind.endswith("1d") else "2d"}", {float(acceleration):g}): {lam:g}')
        print("\nTUNED_LAMDAS = {" + ", ".join(entries) + "}")
    print(f"(max_iter {args.max_iter}, {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
