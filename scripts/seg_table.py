#!/usr/bin/env python
"""Per-class Dice and HD95 of the tissue-segmentation bundle on its evaluation volume.

Runs the bundle's own evaluate config (train.json + evaluate.json): the MNI152 2009a template,
never trained on, with tissue labels from its probability maps (`make_seg_dataset.py`). Dice and
95th-percentile Hausdorff distance are MONAI's (`MeanDice`, `HausdorffDistance(percentile=95)`)
on the 1 mm RAS grid, so HD95 is in mm.

    python scripts/make_seg_dataset.py --data ../shared/data --out data/generated/seg_brain
    python scripts/seg_table.py [--bundle bundles/brain_mri_tissue_seg] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from monai.bundle import ConfigWorkflow


def evaluate(bundle: Path, dataset_dir: str | None) -> dict:
    configs = [str(bundle / "configs" / name) for name in ("train.json", "evaluate.json")]
    override = {} if dataset_dir is None else {"dataset_dir": dataset_dir}
    with tempfile.TemporaryDirectory() as out:
        wf = ConfigWorkflow(config_file=configs, meta_file=str(bundle / "configs" / "metadata.json"),
                            workflow_type="eval", output_dir=out, **override)
        wf.initialize()
        wf.run()
        state = wf.parser.get_parsed_content("validate#evaluator").state
        names = wf.parser.get_parsed_content("class_names")
        files = [item["image"] for item in wf.parser.get_parsed_content("val_files")]
        wf.finalize()
    return {
        "data": files,
        "classes": {
            name: {"dice": float(state.metrics[f"val_dice_{short}"]), "hd95_mm": float(state.metrics[f"val_hd95_{short}"])}
            for name, short in zip(names, ("csf", "gm", "wm"))
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=Path(__file__).resolve().parents[1] / "bundles/brain_mri_tissue_seg")
    parser.add_argument("--dataset-dir", default=None, help="default: the bundle's dataset_dir")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = evaluate(args.bundle, args.dataset_dir)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"data: {', '.join(Path(f).name for f in result['data'])} (never trained on)\n")
    print("| class | Dice | HD95 (mm) |\n|---|---|---|")
    for name, m in result["classes"].items():
        print(f"| {name} | {m['dice']:.4f} | {m['hd95_mm']:.2f} |")


if __name__ == "__main__":
    main()
