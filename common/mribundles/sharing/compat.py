"""Can this site run a received bundle? Its metadata's package versions against what is installed.

A bundle's metadata records the versions it was built and tested with (``monai_version``,
``pytorch_version``, ``required_packages_version``). We read them as minimums within the same
major version: an older installed package may lack what the configs call, and a new major
version may have removed it. A missing package is unsatisfiable.
"""

from __future__ import annotations

import os
from importlib import metadata as importlib_metadata

from packaging.version import InvalidVersion, Version

from mribundles.errors import InvalidInputError

__all__ = ["check_requirements", "unsatisfied_requirements"]


def _installed(package: str) -> str | None:
    try:
        return importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        return None


def _satisfies(installed: str, required: str) -> bool:
    have, need = Version(installed), Version(required)
    # Local build tags (2.13.0+cpu) and pre-release markers do not change what the API offers.
    have = Version(have.base_version)
    need = Version(need.base_version)
    return have.major == need.major and have >= need


def unsatisfied_requirements(meta: dict) -> list[str]:
    """One line per package the metadata requires that this site cannot satisfy."""
    required = {"monai": meta.get("monai_version"), "torch": meta.get("pytorch_version")}
    required.update(meta.get("required_packages_version") or {})
    problems = []
    for package, version in required.items():
        if not version:
            continue
        installed = _installed(package)
        if installed is None:
            problems.append(f"{package} {version} is required but not installed")
            continue
        try:
            ok = _satisfies(installed, str(version))
        except InvalidVersion:
            problems.append(f"{package}: cannot compare installed {installed} with required {version}")
            continue
        if not ok:
            problems.append(f"{package} {version} is required (same major, at least that), {installed} is installed")
    return problems


def check_requirements(meta: dict, meta_file: str | os.PathLike) -> None:
    """Raise InvalidInputError naming the metadata file and the first unsatisfiable requirement."""
    problems = unsatisfied_requirements(meta)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InvalidInputError(f"this site cannot satisfy the bundle: {problems[0]}{more}", meta_file)
