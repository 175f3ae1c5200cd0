#!/usr/bin/env python
"""Per-class Dice and HD95 of the tissue-segmentation bundle on real volumes it never trained on.

Runs the bundle's own evaluate config (train.json + evaluate.json) once per volume of
`dataset_dir/val` (`make_seg_dataset.py`): the MNI152 2009a template, its T2-like inversion and
4 mm thick-slice versions (tissue labels from the template's probability maps). The voxelmorph
subject is training data (`dataset_dir/train`), so it is not scored.
Dice and 95th-percentile Hausdorff distance are MONAI's (`MeanDice`,
`HausdorffDistance(percentile=95)`) on the 1 mm RAS grid, so HD95 is in mm.

    python scripts/make_seg_dataset.py --data ../shared/data --out data/generated/seg_brain
    python scripts/seg_table.py [--bundle bundles/brain_mri_tissue_seg] [--ckpt-dir DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from monai.bundle import ConfigWorkflow

CLASSES = ("csf", "gm", "wm")


def evaluate_one(bundle: Path, pair: dict, overrides: dict) -> dict:
    """Dice and HD95 per class of the bundle's weights on one (image, label) pair."""
    configs = [str(bundle / "configs" / name) for name in ("train.json", "evaluate.json")]
    with tempfile.TemporaryDirectory() as out:
        wf = ConfigWorkflow(config_file=configs, meta_file=str(bundle / "configs" / "metadata.json"),
                            workflow_type="eval", output_dir=out, val_files=[pair], **overrides)
        wf.initialize()
        wf.run()
        state = wf.parser.get_parsed_content("validate#evaluator").state
        wf.finalize()
    return {c: {"dice": float(state.metrics[f"val_dice_{c}"]), "hd95_mm": float(state.metrics[f"val_hd95_{c}"])} for c in CLASSES}


def evaluate(bundle: Path, dataset_dir: str | None = None, ckpt_dir: str | None = None) -> dict:
    """{volume name: {class: {"dice", "hd95_mm"}}} over every volume of the bundle's val files."""
    overrides = {k: v for k, v in (("dataset_dir", dataset_dir), ("ckpt_dir", ckpt_dir)) if v is not None}
    configs = [str(bundle / "configs" / name) for name in ("train.json", "evaluate.json")]
    wf = ConfigWorkflow(config_file=configs, workflow_type="eval", **overrides)
    pairs = wf.parser.get_parsed_content("val_files")
    results = {}
    for i, pair in enumerate(pairs, 1):
        name = Path(pair["image"]).name.split(".")[0]
        print(f"[{i}/{len(pairs)}] {name}", flush=True)
        results[name] = evaluate_one(bundle, pair, overrides)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=Path(__file__).resolve().parents[1] / "bundles/brain_mri_tissue_seg")
    parser.add_argument("--dataset-dir", default=None, help="default: the bundle's dataset_dir")
    parser.add_argument("--ckpt-dir", default=None, help="folder of the model.pt to evaluate (default: the bundle's models/)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = evaluate(args.bundle, args.dataset_dir, args.ckpt_dir)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print("\nreal volumes, never trained on; Dice (HD95 mm)\n")
    print("| volume | CSF | grey matter | white matter |\n|---|---|---|---|")
    for name, classes in results.items():
        cells = " | ".join(f"{classes[c]['dice']:.4f} ({classes[c]['hd95_mm']:.2f})" for c in CLASSES)
        print(f"| {name} | {cells} |")


if __name__ == "__main__":
    main()
