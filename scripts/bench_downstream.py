#!/usr/bin/env python
"""Downstream benchmark: the registration bundle against ANTs SyN and elastix on the same pairs,
and the super-resolution bundle against sinc, cubic and trilinear interpolation.

Super-resolution (`--tasks superres`): `scripts/sr_table.py`'s harness. The MNI152 template,
never trained on, degraded by 4x4 in-plane k-space truncation and by 4x thick slices; the
bundle and the three interpolations scored with fastMRI's PSNR and SSIM against the 1 mm volume.
Writes `superres.md`, `superres.json` and one PNG per degradation.

Registration (`--tasks registration`, needs the peers):

Pairs: the two real 3D brains shipped with the library, registered both ways: the voxelmorph T1
subject and the MNI152 2009a template (an average of 152 brains), with tissue labels (CSF, grey
matter, white matter; the subject's from its FreeSurfer aseg, the template's from its probability
maps). The bundle never saw the two brains paired in training (`configs/train.json` deforms each
brain against itself).

Every method gets the same input: both volumes through the bundle's preprocessing without its
affine step (RAS, the fixed grid at 1 mm, the moving volume resampled onto it through the files'
affines, intensities scaled to [0, 1]). Each then runs its own full pipeline, affine included:

- affine: the bundle's affine pre-alignment alone;
- network: affine pre-alignment + the VoxelMorph network alone (`brain_mri_reg_voxelmorph` with
  ``refine#steps`` 0);
- bundle: the bundle as it runs: the same, plus its instance refinement of the predicted
  velocity (``refine`` in its inference.json; ``--refine-steps`` overrides the number of steps);
- ANTs SyN: `ants.registration(type_of_transform="SyN")` (rigid + affine + SyN, antspyx defaults);
- elastix: itk-elastix's default `affine` then `bspline` parameter maps.

Figures: Dice and HD95 (mm) per class of the moving labels warped by nearest neighbour, as MONAI
computes them; the share of brain voxels (fixed image > 0.01) with det J <= 0 and the standard
deviation of log det J, from each method's displacement field; and seconds of registration (the
call that registers, not file I/O), all methods on the same threads of this CPU.

    pip install -e ".[bench]"   # ANTs and elastix, the registration peers; not dependencies of the collection
    python scripts/bench_downstream.py [--tasks registration superres] [--threads 2] [--out results/downstream]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["CSF", "grey matter", "white matter"]


def prepared_pairs(bundle: Path):
    """[(name, data dict)]: each pair through the bundle's preprocessing (with its loader: the
    pairs are files), minus the affine step."""
    from monai.transforms import Compose

    from mribundles import sample_data
    from mribundles.bundles import open_bundle
    from mribundles.data import registration_pairs
    from mribundles.transforms import AffineAlignd

    steps = open_bundle(bundle, overrides={"device": "$torch.device('cpu')"}).preprocessing(without_loaders=False).transforms
    before_affine = Compose([t for t in steps if not isinstance(t, AffineAlignd)])
    images = [sample_data.path("voxelmorph_t1.nii.gz"), sample_data.path("mni152_2009a_t1.nii.gz")]
    labels = [sample_data.path("voxelmorph_t1_tissue.nii.gz"), sample_data.path("mni152_2009a_tissue.nii.gz")]
    pairs = registration_pairs(images, images[::-1], labels, labels[::-1])
    return [(f"{Path(p['moving_image']).name.split('.')[0]} -> {Path(p['fixed_image']).name.split('.')[0]}", before_affine(p)) for p in pairs]


def run_bundle(bundle: Path, data: dict, affine_only: bool = False, refine_steps: int | None = None):
    """The bundle's registration of one prepared pair; ``refine_steps`` overrides its ``refine#steps``."""
    import torch
    from monai.networks.blocks import Warp

    from mribundles.bundles import open_bundle
    from mribundles.transforms import AffineAlignd

    overrides = {"device": "$torch.device('cpu')"}
    if refine_steps is not None:
        overrides["refine#steps"] = refine_steps
    network = open_bundle(bundle, overrides=overrides).network()
    align = AffineAlignd(["moving_image", "moving_label"], fixed_key="fixed_image", mode=["bilinear", "nearest"])
    start = time.perf_counter()
    with torch.no_grad():
        d = align(data)
        moving, fixed = d["moving_image"].as_tensor()[None], d["fixed_image"].as_tensor()[None]
        ddf = torch.zeros(1, 3, *fixed.shape[2:]) if affine_only else network(moving, fixed)
        warped_label = Warp("nearest", "zeros")(d["moving_label"].as_tensor()[None], ddf)
    seconds = time.perf_counter() - start
    warped = Warp("bilinear", "zeros")(moving, ddf)
    return seconds, warped_label[0], ddf[0], warped[0]


def run_syn(data: dict):
    import ants
    import numpy as np
    import torch

    fixed = ants.from_numpy(data["fixed_image"][0].numpy().astype(np.float32))
    moving = ants.from_numpy(data["moving_image"][0].numpy().astype(np.float32))
    start = time.perf_counter()
    result = ants.registration(fixed, moving, type_of_transform="SyN")
    seconds = time.perf_counter() - start
    labels = ants.from_numpy(data["moving_label"][0].numpy().astype(np.float32))
    warped_label = ants.apply_transforms(fixed, labels, result["fwdtransforms"], interpolator="genericLabel").numpy()
    # the deformable part; unit spacing and identity direction: physical = voxel coordinates
    field = ants.image_read(result["fwdtransforms"][0]).numpy()  # (X, Y, Z, 3)
    ddf = torch.from_numpy(np.ascontiguousarray(field)).permute(3, 0, 1, 2)
    return seconds, torch.from_numpy(warped_label)[None], ddf, torch.from_numpy(result["warpedmovout"].numpy())[None]


def run_elastix(data: dict):
    import itk
    import numpy as np
    import torch

    fixed = itk.image_view_from_array(np.ascontiguousarray(data["fixed_image"][0].numpy().astype(np.float32).T))
    moving = itk.image_view_from_array(np.ascontiguousarray(data["moving_image"][0].numpy().astype(np.float32).T))
    parameters = itk.ParameterObject.New()
    parameters.AddParameterMap(parameters.GetDefaultParameterMap("affine"))
    parameters.AddParameterMap(parameters.GetDefaultParameterMap("bspline"))
    start = time.perf_counter()
    warped, transform = itk.elastix_registration_method(fixed, moving, parameter_object=parameters, log_to_console=False)
    seconds = time.perf_counter() - start
    for i in range(transform.GetNumberOfParameterMaps()):
        transform.SetParameter(i, "FinalBSplineInterpolationOrder", "0")
    labels = itk.image_view_from_array(np.ascontiguousarray(data["moving_label"][0].numpy().astype(np.float32).T))
    warped_label = np.asarray(itk.transformix_filter(labels, transform)).T
    with tempfile.TemporaryDirectory() as scratch:  # transformix writes the field there too
        field = np.asarray(itk.transformix_deformation_field(moving, transform, output_directory=scratch))  # (Z, Y, X, 3): x, y, z
    ddf = torch.from_numpy(np.ascontiguousarray(field.transpose(3, 2, 1, 0)))
    return seconds, torch.from_numpy(warped_label.round())[None], ddf, torch.from_numpy(np.asarray(warped).T.copy())[None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=["registration", "superres"], default=["registration", "superres"])
    parser.add_argument("--bundle", type=Path, default=REPO / "bundles/brain_mri_reg_voxelmorph")
    parser.add_argument("--sr-bundle", type=Path, default=REPO / "bundles/brain_mri_sr")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--refine-steps", type=int, default=None, help="the bundle's refinement steps (default: its own)")
    parser.add_argument("--methods", nargs="+", default=["affine", "network", "bundle", "ANTs SyN", "elastix"],
                        help="any of: affine, network, bundle, 'ANTs SyN', elastix")
    parser.add_argument("--out", type=Path, default=REPO / "results/downstream")
    args = parser.parse_args()
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)  # read by ANTs and ITK at import
    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if "superres" in args.tasks:
        superres(args.sr_bundle, args.out)
    if "registration" in args.tasks:
        registration(args)


def superres(bundle: Path, out: Path) -> None:
    import sr_table  # scripts/, beside this file

    from mribundles.sample_data import path

    result = sr_table.table(path("mni152_2009a_t1.nii.gz"), bundle, "cpu", figures=out)
    table = sr_table.markdown(result)
    (out / "superres.md").write_text(table)
    (out / "superres.json").write_text(json.dumps(result, indent=2) + "\n")
    print(table)


def registration(args: argparse.Namespace) -> None:
    from mribundles.handlers.registration_report import save_registration_png
    from mribundles.metrics.registration import registration_report

    runners = {
        "affine": lambda d: run_bundle(args.bundle, d, affine_only=True),
        "network": lambda d: run_bundle(args.bundle, d, refine_steps=0),
        "bundle": lambda d: run_bundle(args.bundle, d, refine_steps=args.refine_steps),
        "ANTs SyN": run_syn,
        "elastix": run_elastix,
    }
    names = {"network": "network alone", "bundle": "bundle" if args.refine_steps is None else f"bundle, {args.refine_steps} refinement steps"}
    rows = []
    for pair, data in prepared_pairs(args.bundle):
        fixed = data["fixed_image"]
        for method in args.methods:
            seconds, warped_label, ddf, warped = runners[method](data)
            report = registration_report(ddf.double(), fixed[0] > 0.01, warped_label, data["fixed_label"], CLASSES)
            rows.append({"pair": pair, "method": names.get(method, method), "seconds": seconds, **report})
            print(f"{pair:45s} {method:9s} {seconds:7.1f} s  Dice GM {report['dice_grey_matter']:.3f} WM {report['dice_white_matter']:.3f}", flush=True)
            stem = f"{pair.replace(' -> ', '_to_')}_{method.replace(' ', '_')}"
            save_registration_png(args.out / f"{stem}.png", fixed, data["moving_image"], warped.float(), ddf.float())
    table = markdown(rows)
    (args.out / "registration.md").write_text(table)
    (args.out / "registration.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(table)


def markdown(rows: list[dict]) -> str:
    """One row per pair and method; speed as the ratio to ANTs SyN on the same pair, same run."""
    syn = {r["pair"]: r["seconds"] for r in rows if r["method"] == "ANTs SyN"}
    lines = [
        "| pair | method | Dice CSF | Dice GM | Dice WM | HD95 GM (mm) | HD95 WM (mm) | det J <= 0 (%) | SD log det J | seconds | x faster than SyN |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        speedup = f"{syn[r['pair']] / r['seconds']:.1f}" if r["pair"] in syn else "-"
        lines.append(
            f"| {r['pair']} | {r['method']} | {r['dice_csf']:.3f} | {r['dice_grey_matter']:.3f} | {r['dice_white_matter']:.3f} | "
            f"{r['hd95_grey_matter']:.2f} | {r['hd95_white_matter']:.2f} | {r['folding_percent']:.3f} | {r['log_jacobian_std']:.3f} | {r['seconds']:.1f} | {speedup} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
