"""Locating a bundle's folder, for configs that must run from anywhere.

`python -m monai.bundle run --config_file bundles/X/configs/inference.json` gives a config no
way to know where its file lies, and model-zoo's `"bundle_root": "."` only works from inside the
bundle. A config says `"bundle_root": "$mribundles.bundles.bundle_root('X')"` instead.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

# The collection's own bundles, next to the library's source root (common/ -> bundles/).
COLLECTION_DIR = Path(__file__).resolve().parents[2] / "bundles"


def bundle_root(name: str) -> str:
    """The folder of bundle `name`, first found of:

    1. the bundle that holds a config file named on the command line (``--config_file`` of
       ``python -m monai.bundle run``), so a copy installed anywhere runs with its own weights;
    2. the current directory, when it is that bundle (the MONAI convention);
    3. ``./bundles/<name>``;
    4. the collection's checkout.

    ``--bundle_root`` on the command line still overrides it.
    """
    cwd = Path.cwd()
    candidates = [*_command_line_bundles(), cwd, cwd / "bundles" / name, COLLECTION_DIR / name]
    for candidate in candidates:
        if _bundle_name(candidate) == name:
            return str(candidate)
    raise FileNotFoundError(f"bundle {name!r} not found in {cwd}, {cwd / 'bundles'} or {COLLECTION_DIR}")


_CONFIG_PATH = re.compile(r"[^\s'\",\[\]]+\.(?:json|ya?ml)")


def _command_line_bundles() -> list[Path]:
    """Bundle folders (``<bundle>/configs/<file>``) of the config files named in ``sys.argv``."""
    folders = []
    args = sys.argv[1:]
    for i, arg in enumerate(args):
        if arg.startswith("--config_file="):
            value = arg.split("=", 1)[1]
        elif arg == "--config_file" and i + 1 < len(args):
            value = args[i + 1]
        else:
            continue
        for path in _CONFIG_PATH.findall(value):
            folder = Path(path).resolve().parent.parent
            if folder not in folders:
                folders.append(folder)
    return folders


def read_metadata(bundle_dir: str | Path) -> dict:
    """A bundle's ``configs/metadata.json`` as a dictionary."""
    return json.loads((Path(bundle_dir) / "configs" / "metadata.json").read_text(encoding="utf-8"))


def _bundle_name(folder: Path) -> str | None:
    try:
        return read_metadata(folder).get("name")
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


def record_weights_sha256(bundle_dir: str | Path, weights: tuple[str, ...] = ("models/model.pt",)) -> dict[str, str]:
    """Write the SHA-256 of each of ``weights`` (paths relative to the bundle) into metadata.json
    (`weights_sha256`), replacing what it listed before; return them."""
    bundle_dir = Path(bundle_dir)
    meta_file = bundle_dir / "configs" / "metadata.json"
    meta = read_metadata(bundle_dir)
    meta["weights_sha256"] = {rel: file_sha256(bundle_dir / rel) for rel in weights}
    meta_file.write_text(json.dumps(meta, indent=4) + "\n")
    return meta["weights_sha256"]


def check_recorded_weights(bundle_dir: str | Path, metadata: dict) -> None:
    """Refuse weights that differ from the hashes the metadata publishes (`weights_sha256`)."""
    from mribundles.errors import InvalidInputError

    for rel, expected in metadata.get("weights_sha256", {}).items():
        path = Path(bundle_dir) / rel
        if not path.is_file():
            raise InvalidInputError(f"weights listed in metadata weights_sha256 are missing: {rel}", path)
        if file_sha256(path) != expected:
            raise InvalidInputError("weights differ from metadata weights_sha256 (run record_weights_sha256)", path)


def load_inference(bundle_dir: str | Path, overrides: dict, device):
    """Parse a bundle's ``configs/inference.json`` with ``overrides`` and load its weights.

    Returns ``(parser, network)``: the parsed config, for the caller to take the pieces it runs,
    and the network with the ``ckpt_path`` weights (``weights_only=True``), in eval mode on
    ``device``. A CheckpointSaver dict (``{"model": state_dict}``) is accepted as well.
    """
    import torch
    from monai.bundle import ConfigParser  # MONAI takes seconds to import

    from mribundles.errors import InvalidInputError

    bundle_dir = Path(bundle_dir)
    config_file = bundle_dir / "configs" / "inference.json"
    if not config_file.is_file():
        raise InvalidInputError("no configs/inference.json in the bundle", bundle_dir)
    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser["bundle_root"] = str(bundle_dir)
    for key, value in overrides.items():
        parser[key] = value
    parser.parse()
    network = parser.get_parsed_content("network")
    ckpt = Path(parser.get_parsed_content("ckpt_path"))
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt}: no trained weights (ckpt_path of {config_file})")
    state = torch.load(ckpt, map_location=device, weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    network.load_state_dict(state)
    network.to(device).eval()
    return parser, network
