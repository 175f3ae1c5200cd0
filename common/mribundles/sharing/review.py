"""What code a bundle will run: every ``$`` expression and every foreign ``_target_`` in its configs.

A MONAI config is a program: a string starting with ``$`` is evaluated as Python, and a
``_target_`` names any importable class or function to call. Nothing in a config is sandboxed,
so the only honest review is to show all of it. ``_target_`` values in MONAI (bare class names
are looked up in MONAI), torch and this library are not listed; everything else is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mribundles.errors import InvalidInputError

__all__ = ["TRUSTED_NAMESPACES", "Finding", "review_bundle"]

TRUSTED_NAMESPACES = ("monai", "torch", "mribundles")


@dataclass(frozen=True)
class Finding:
    file: str  # relative to the bundle folder
    key: str  # MONAI config id, "#"-separated
    kind: str  # "expression" or "target"
    text: str

    def __str__(self) -> str:
        what = "expression" if self.kind == "expression" else "_target_ outside monai/torch/mribundles"
        return f"{self.file}:{self.key or '<top>'}: {what}: {self.text}"


def _trusted_target(target: str) -> bool:
    return "." not in target or target.split(".")[0] in TRUSTED_NAMESPACES


def _walk(node, key: str, file: str, findings: list[Finding]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            child = f"{key}#{k}" if key else str(k)
            if k == "_target_" and isinstance(v, str) and not v.startswith("$") and not _trusted_target(v):
                findings.append(Finding(file, child, "target", v))
            else:
                _walk(v, child, file, findings)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _walk(v, f"{key}#{i}" if key else str(i), file, findings)
    elif isinstance(node, str) and node.startswith("$"):
        findings.append(Finding(file, key, "expression", node))


def review_bundle(bundle_dir: str | os.PathLike) -> list[Finding]:
    """Every expression and foreign target in ``bundle_dir/configs/*.{json,yaml,yml}``, in file order."""
    from monai.bundle import ConfigParser

    configs = Path(bundle_dir) / "configs"
    if not configs.is_dir():
        raise InvalidInputError("no configs folder (not a bundle)", bundle_dir)
    findings: list[Finding] = []
    for path in sorted(p for p in configs.iterdir() if p.suffix in (".json", ".yaml", ".yml")):
        try:
            content = ConfigParser.load_config_file(path)
        except Exception as e:  # json/yaml each raise their own error types
            raise InvalidInputError(f"cannot parse config: {' '.join(str(e).split())}", path) from e
        _walk(content, "", path.relative_to(bundle_dir).as_posix(), findings)
    return findings
