"""Locating a bundle's folder, for configs that must run from anywhere.

`python -m monai.bundle run --config_file bundles/X/configs/inference.json` gives a config no
way to know where its file lies, and model-zoo's `"bundle_root": "."` only works from inside the
bundle. A config says `"bundle_root": "$mribundles.bundles.bundle_root('X')"` instead.
"""

from __future__ import annotations

import json
from pathlib import Path

# The collection's own bundles, next to the library's source root (common/ -> bundles/).
COLLECTION_DIR = Path(__file__).resolve().parents[2] / "bundles"


def bundle_root(name: str) -> str:
    """The folder of bundle `name`: the current directory when it is that bundle (the MONAI
    convention, e.g. after installing a shared bundle elsewhere), else `./bundles/<name>`, else
    the collection's checkout. `--bundle_root` on the command line still overrides it.
    """
    cwd = Path.cwd()
    for candidate in (cwd, cwd / "bundles" / name, COLLECTION_DIR / name):
        if _bundle_name(candidate) == name:
            return str(candidate)
    raise FileNotFoundError(f"bundle {name!r} not found in {cwd}, {cwd / 'bundles'} or {COLLECTION_DIR}")


def _bundle_name(folder: Path) -> str | None:
    meta = folder / "configs" / "metadata.json"
    try:
        return json.loads(meta.read_text()).get("name")
    except (OSError, ValueError):
        return None


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks (weights can be tens of MB)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def record_weights_sha256(bundle_dir: str | Path) -> str:
    """Write the SHA-256 of `models/model.pt` into metadata.json (`weights_sha256`)."""
    bundle_dir = Path(bundle_dir)
    meta_file = bundle_dir / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["weights_sha256"] = {"models/model.pt": file_sha256(bundle_dir / "models" / "model.pt")}
    meta_file.write_text(json.dumps(meta, indent=4) + "\n")
    return meta["weights_sha256"]["models/model.pt"]
