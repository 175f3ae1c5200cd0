"""Installing a received bundle zip: every check first, then one rename into place.

In order, before anything is written: the zip's entries and the manifest against its bytes, within
the size limits (`package.open_package`); the signature against the site's trusted keys (when the
zip is signed and keys are given); and the code policy (`review`, read from the zip): a bundle
with anything outside the policy is refused unless a trusted key signed it or the user says
``allow_code``. Then, on a copy unpacked beside the destination: the metadata against the
shipped schema, the weights against the metadata's hashes and the package versions against this
site. Any refusal leaves nothing behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mribundles.bundles import check_recorded_weights
from mribundles.errors import InvalidInputError
from mribundles.sharing.compat import check_requirements
from mribundles.sharing.metadata import verify_bundle_metadata
from mribundles.sharing.package import Package, extract_package, open_package
from mribundles.sharing.review import review_bundle, summary

__all__ = ["check_code_policy", "install_bundle"]


def check_code_policy(package: Package, allow_code: bool) -> None:
    """Refuse an unsigned (or not trust-checked) package with findings, unless ``allow_code``."""
    if package.signed_by is not None or allow_code:
        return
    findings = review_bundle(package)
    if not findings:
        return
    # Name a finding a reviewer would not expect first: a foreign target over an expression.
    first = next((f for f in findings if f.kind != "expression"), findings[0])
    raise InvalidInputError(
        f"bundle runs code outside the policy ({summary(findings)}; e.g. {first.file}:{first.key}: "
        f"{first.text[:80]}; list them with `mribundles review`) and no trusted key signed it: "
        "give --trusted-keys with the publisher's key, or --allow-code after reviewing it",
        package.path,
    )


def install_bundle(
    zip_path: str | os.PathLike,
    to: str | os.PathLike,
    trusted_keys: str | os.PathLike | None = None,
    allow_code: bool = False,
) -> Path:
    """Check ``zip_path`` and unpack it as ``to/<name>``; return that folder."""
    package = open_package(zip_path, trusted_keys)
    check_code_policy(package, allow_code)

    def check(folder: Path) -> None:
        meta_file = verify_bundle_metadata(folder)
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        where = Path(package.path)
        if meta.get("name") != package.name or meta.get("version") != package.version:
            raise InvalidInputError(
                f"metadata says {meta.get('name')} {meta.get('version')}, the manifest {package.name} {package.version}", where
            )
        check_recorded_weights(folder, meta)
        check_requirements(meta, where)

    return extract_package(package, to, check)
