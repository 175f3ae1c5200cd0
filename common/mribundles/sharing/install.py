"""Installing a received bundle zip: every check first, then one rename into place.

In order: the manifest against the zip's bytes, the signature against the site's trusted keys
(when the zip is signed and keys are given), the metadata against the shipped schema, the weights
against the metadata's hashes, the package versions against this site, and the code review:
a bundle whose configs run code (see `review`) is refused unless a trusted key signed it or the
user says ``allow_code``. Any refusal leaves nothing behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mribundles.bundles import check_recorded_weights
from mribundles.errors import InvalidInputError
from mribundles.sharing.compat import check_requirements
from mribundles.sharing.metadata import verify_bundle_metadata
from mribundles.sharing.package import extract_package, open_package
from mribundles.sharing.review import review_bundle

__all__ = ["install_bundle"]


def install_bundle(
    zip_path: str | os.PathLike,
    to: str | os.PathLike,
    trusted_keys: str | os.PathLike | None = None,
    allow_code: bool = False,
) -> Path:
    """Check ``zip_path`` and unpack it as ``to/<name>``; return that folder."""
    package = open_package(zip_path, trusted_keys)

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
        findings = review_bundle(folder)
        if findings and package.signed_by is None and not allow_code:
            targets = [f for f in findings if f.kind == "target"]
            first = targets[0] if targets else findings[0]
            raise InvalidInputError(
                f"bundle runs code from its configs ({len(findings)} items, e.g. {first.file}:{first.key}: "
                f"{first.text[:80]}; list them with `mribundles review`) and no trusted key signed it: "
                "give --trusted-keys with the publisher's key, or --allow-code after reviewing it",
                where,
            )

    return extract_package(package, to, check)
