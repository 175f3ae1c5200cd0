"""Packing a bundle into a zip with a manifest, and checking such a zip before anything is unpacked.

Layout of ``<name>-<version>.zip``::

    manifest.json        {"format", "bundle", "version", "files": {"<name>/<path>": sha256}}
    manifest.sig         optional Ed25519 signature of manifest.json (see `signing`)
    <name>/configs/...   the bundle, as `python -m monai.bundle run` expects it
    <name>/models/...

The zip is reproducible (sorted entries, fixed timestamps), so packing the same bundle twice
gives the same bytes. A zip is accepted only if its entries are exactly the manifest's files with
the manifest's hashes, under one top-level folder named for the bundle, with no absolute or
``..`` paths; every refusal names the zip and the first problem found.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mribundles.bundles import check_recorded_weights, file_sha256
from mribundles.errors import InvalidInputError
from mribundles.io.atomic import atomic_path
from mribundles.sharing import signing

__all__ = ["MANIFEST", "SIGNATURE", "Package", "extract_package", "open_package", "pack_bundle"]

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
FORMAT = "mribundles-manifest/1"
# What a bundle is, by MONAI's specification; run outputs (outputs/, eval/, logs) stay home.
BUNDLE_PARTS = ("configs", "models", "docs", "scripts", "LICENSE")
_SKIP_NAMES = {"__pycache__", ".DS_Store"}
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def _bundle_files(bundle_dir: Path) -> list[Path]:
    files = []
    for part in BUNDLE_PARTS:
        path = bundle_dir / part
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [
                p for p in path.rglob("*")
                if p.is_file() and not _SKIP_NAMES.intersection(p.relative_to(bundle_dir).parts) and p.suffix != ".pyc"
            ]
    return sorted(files)


def _metadata(bundle_dir: Path) -> dict:
    from mribundles.sharing.metadata import verify_bundle_metadata

    return json.loads(verify_bundle_metadata(bundle_dir).read_text(encoding="utf-8"))


def pack_bundle(bundle_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, key: str | os.PathLike | None = None) -> Path:
    """Write ``<out_dir>/<name>-<version>.zip`` (default: the current folder) and return its path.

    The metadata is validated against the shipped schema and the weights against their recorded
    hashes first, so a broken bundle never leaves the site. With ``key`` (an Ed25519 private key
    file) the manifest is signed.
    """
    bundle_dir = Path(bundle_dir)
    metadata = _metadata(bundle_dir)
    check_recorded_weights(bundle_dir, metadata)
    name, version = metadata["name"], metadata["version"]
    files = _bundle_files(bundle_dir)
    arcnames = {f: f"{name}/{f.relative_to(bundle_dir).as_posix()}" for f in files}
    manifest = {
        "format": FORMAT,
        "bundle": name,
        "version": version,
        "files": {arcnames[f]: file_sha256(f) for f in files},
    }
    manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")
    signature = None if key is None else signing.sign(manifest_bytes, key)

    out = Path(out_dir or ".") / f"{name}-{version}.zip"
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        _write_entry(zf, MANIFEST, manifest_bytes)
        if signature is not None:
            _write_entry(zf, SIGNATURE, (json.dumps(signature, indent=2) + "\n").encode("utf-8"))
        for f in files:
            _write_entry(zf, arcnames[f], f.read_bytes())
    return out


def _write_entry(zf: zipfile.ZipFile, arcname: str, data: bytes) -> None:
    info = zipfile.ZipInfo(arcname, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


@dataclass(frozen=True)
class Package:
    """A zip whose manifest matched its content byte for byte.

    ``signature`` is the signature record (None when unsigned); ``signed_by`` the trusted public
    key file that verified it, or None when it was not checked (no trusted keys given) or there
    is none.
    """

    path: Path
    name: str
    version: str
    files: dict[str, str]
    signature: dict | None
    signed_by: Path | None

    def read(self, rel: str) -> bytes:
        """A bundle file by its path inside the bundle (``configs/metadata.json``)."""
        with zipfile.ZipFile(self.path) as zf:
            return zf.read(f"{self.name}/{rel}")


def open_package(path: str | os.PathLike, trusted_keys: str | os.PathLike | None = None) -> Package:
    """Check a bundle zip: manifest against content, and, with ``trusted_keys``, the signature.

    Raises InvalidInputError naming the zip: not a zip, truncated, no manifest, an entry missing,
    extra or altered, an unsafe path, or (with ``trusted_keys``) a signature that is not by a
    trusted key or does not match. An unsigned zip passes with ``signature`` None: whether
    that is acceptable is the caller's decision (see `install`).
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError("bundle zip not found", path)
    try:
        with zipfile.ZipFile(path) as zf:
            entries = {i.filename: i for i in zf.infolist() if not i.is_dir()}
            if MANIFEST not in entries:
                raise InvalidInputError(f"no {MANIFEST} in the zip (not packed by `mribundles pack`)", path)
            manifest_bytes = zf.read(MANIFEST)
            signature_bytes = zf.read(SIGNATURE) if SIGNATURE in entries else None
            manifest = _parse_manifest(manifest_bytes, path)
            name = manifest["bundle"]
            expected = manifest["files"]
            for arcname in expected:
                _check_arcname(arcname, name, path)
            content = set(entries) - {MANIFEST, SIGNATURE}
            if missing := sorted(set(expected) - content):
                raise InvalidInputError(f"file listed in the manifest is missing from the zip: {missing[0]}", path)
            if extra := sorted(content - set(expected)):
                raise InvalidInputError(f"file in the zip is not in the manifest: {extra[0]}", path)
            for arcname in sorted(expected):
                digest = hashlib.sha256()
                with zf.open(entries[arcname]) as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        digest.update(chunk)
                if digest.hexdigest() != expected[arcname]:
                    raise InvalidInputError(f"content of {arcname} does not match its manifest sha256", path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as e:
        # zipfile raises BadZipFile for a bad directory, OSError/EOFError for a truncated member,
        # and its CRC check BadZipFile for a flipped byte the manifest check did not reach.
        raise InvalidInputError(f"corrupt or truncated zip: {' '.join(str(e).split())}", path) from e

    record = signed_by = None
    if signature_bytes is not None:
        try:
            record = json.loads(signature_bytes)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InvalidInputError(f"{SIGNATURE} is not JSON", path) from e
        # A signature that is there is checked whenever keys are given: an untrusted or broken
        # one is refused, never treated as if the bundle were merely unsigned.
        if trusted_keys is not None:
            signed_by = signing.verify_signature(manifest_bytes, record, trusted_keys, path)
    return Package(path, name, manifest["version"], expected, record, signed_by)


def _parse_manifest(data: bytes, path: Path) -> dict:
    try:
        manifest = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidInputError(f"{MANIFEST} is not JSON", path) from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InvalidInputError(f"{MANIFEST} is not a {FORMAT} manifest", path)
    for key, kind in (("bundle", str), ("version", str), ("files", dict)):
        if not isinstance(manifest.get(key), kind):
            raise InvalidInputError(f"{MANIFEST}: missing or invalid key '{key}'", path)
    return manifest


def _check_arcname(arcname: str, name: str, path: Path) -> None:
    """One top-level folder named for the bundle; no absolute, drive or parent paths."""
    parts = PurePosixPath(arcname).parts
    if arcname.startswith("/") or "\\" in arcname or ":" in arcname or ".." in parts or len(parts) < 2 or parts[0] != name:
        raise InvalidInputError(f"unsafe or misplaced path in the manifest: {arcname!r}", path)


def extract_package(package: Package, dest: str | os.PathLike, check: Callable[[Path], None] | None = None) -> Path:
    """Unpack a checked package as ``dest/<name>`` and return that folder.

    The files go to a temporary folder beside it first, are hashed again as they are written
    (the zip may have changed since `open_package`), then ``check(folder)`` runs on the unpacked
    copy, and only then is the folder renamed into place. So a refused, failed or interrupted
    unpack leaves nothing. An existing ``dest/<name>`` is refused.
    """
    dest = Path(dest)
    target = dest / package.name
    if target.exists():
        raise InvalidInputError("bundle folder exists already; remove it or choose another --to", target)
    created = [d for d in (dest, *dest.parents) if not d.exists()]
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{package.name}.", suffix=".tmp", dir=dest))
    installed = False
    try:
        with zipfile.ZipFile(package.path) as zf:
            for arcname, expected in package.files.items():
                data = zf.read(arcname)
                if hashlib.sha256(data).hexdigest() != expected:
                    raise InvalidInputError(f"content of {arcname} changed since it was checked", package.path)
                out = staging / arcname
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(data)
        if check is not None:
            check(staging / package.name)
        os.replace(staging / package.name, target)
        installed = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not installed:  # leave no trace: also the folders this call created
            for folder in created:
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
    return target
