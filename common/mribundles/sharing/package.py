"""Packing a bundle into a zip with a manifest, and checking such a zip before anything is unpacked.

Layout of ``<name>-<version>.zip``::

    manifest.json        {"format", "bundle", "version", "files": {"<name>/<path>": sha256}}
    manifest.sig         optional Ed25519 signature of manifest.json (see `signing`)
    <name>/configs/...   the bundle, as `python -m monai.bundle run` expects it
    <name>/models/...

The zip is reproducible (sorted entries, fixed timestamps), so packing the same bundle twice
gives the same bytes. A zip is accepted only if its entries are exactly the manifest's files with
the manifest's hashes, under one top-level folder named for the bundle and inside the bundle's
parts (`BUNDLE_PARTS`): no absolute or ``..`` paths, no symbolic links or other special entries,
no directory entries, no duplicate names. Every entry is streamed in chunks and counted as it is
inflated, so the limits (`MAX_ENTRY_BYTES` per file, `MAX_TOTAL_BYTES` in all) hold against the
real bytes whatever sizes the zip's headers declare, and a size that differs from the declared
one is refused. All of that is checked before anything is written; every refusal names the zip
and the first problem found.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tempfile
import unicodedata
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mribundles.bundles import check_recorded_weights, file_sha256
from mribundles.errors import InvalidInputError
from mribundles.io.atomic import atomic_path
from mribundles.sharing import signing

__all__ = [
    "BUNDLE_PARTS",
    "MANIFEST",
    "MAX_ENTRY_BYTES",
    "MAX_TOTAL_BYTES",
    "SIGNATURE",
    "Package",
    "bundle_files",
    "extract_package",
    "open_package",
    "pack_bundle",
]

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
FORMAT = "mribundles-manifest/1"
# What a bundle is, by MONAI's specification; run outputs (outputs/, eval/, logs) stay home.
BUNDLE_PARTS = ("configs", "models", "docs", "scripts", "LICENSE")
_SKIP_NAMES = {"__pycache__", ".DS_Store"}
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)

# Limits on what a received zip may make us read and write, counted on the inflated bytes.
# Weights are at most 25 MB by the collection's rules; these leave ten times that and more.
MAX_ENTRY_BYTES = 256 * 2**20
MAX_TOTAL_BYTES = 1024 * 2**20
MAX_MANIFEST_BYTES = 4 * 2**20  # manifest.json and manifest.sig: a few hundred bytes per file
MAX_ENTRIES = 10_000
_CHUNK = 1 << 20
# A bundle name or version becomes a file name (<name>-<version>.zip) and a folder (<to>/<name>).
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


def check_safe_name(value, what: str, where: str | os.PathLike) -> str:
    """``value`` if it can be a file or folder name as it is: letters, digits, ``._+-``, not
    starting with a dot, no ``..``, at most 128 characters; else InvalidInputError naming ``where``."""
    if not isinstance(value, str) or not _SAFE_NAME.fullmatch(value) or ".." in value:
        raise InvalidInputError(
            f"unsafe bundle {what} {value!r}: use letters, digits and ._+- only (no path separators, no '..', not empty)",
            where,
        )
    return value


def _refuse_special(path: Path, bundle_dir: Path) -> None:
    """A symbolic link or anything but a regular file or folder is refused: a link in docs/
    would ship the file it points to, a FIFO would hang the packing."""
    mode = path.lstat().st_mode
    rel = path.relative_to(bundle_dir).as_posix()
    if stat.S_ISLNK(mode):
        raise InvalidInputError(f"symbolic link in the bundle: {rel} (copy the file in, or remove the link)", path)
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise InvalidInputError(f"not a regular file: {rel}", path)


def bundle_files(bundle_dir: str | os.PathLike) -> list[Path]:
    """The files of a bundle that `pack_bundle` ships (`BUNDLE_PARTS`), sorted.

    Links are never followed: a symbolic link (to a file or a folder) or a special file anywhere
    in the bundle's parts raises InvalidInputError naming it.
    """
    bundle_dir = Path(bundle_dir)
    files = []
    for part in BUNDLE_PARTS:
        path = bundle_dir / part
        if not os.path.lexists(path):
            continue
        _refuse_special(path, bundle_dir)
        if path.is_file():
            files.append(path)
            continue
        for root, dirs, names in os.walk(path, followlinks=False):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_NAMES)
            for entry in [*dirs, *names]:
                _refuse_special(Path(root) / entry, bundle_dir)
            files += [Path(root) / n for n in names if n not in _SKIP_NAMES and not n.endswith(".pyc")]
    return sorted(files)


def _metadata(bundle_dir: Path) -> dict:
    from mribundles.sharing.metadata import verify_bundle_metadata

    return json.loads(verify_bundle_metadata(bundle_dir).read_text(encoding="utf-8"))


def pack_bundle(bundle_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, key: str | os.PathLike | None = None) -> Path:
    """Write ``<out_dir>/<name>-<version>.zip`` (default: the current folder) and return its path.

    The files are listed first (a symbolic link or special file is refused), then the metadata is
    validated against the shipped schema, its ``name`` and ``version`` must be safe file names,
    and the weights must match their recorded hashes, so a broken bundle never leaves the site.
    With ``key`` (an Ed25519 private key file) the manifest is signed.
    """
    bundle_dir = Path(bundle_dir)
    files = bundle_files(bundle_dir)
    metadata = _metadata(bundle_dir)
    meta_file = bundle_dir / "configs" / "metadata.json"
    name = check_safe_name(metadata["name"], "name", meta_file)
    version = check_safe_name(metadata["version"], "version", meta_file)
    check_recorded_weights(bundle_dir, metadata)
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


def _corrupt(error: BaseException, where: Path) -> InvalidInputError:
    return InvalidInputError(f"corrupt or truncated zip: {' '.join(str(error).split()) or type(error).__name__}", where)


# What zipfile and zlib raise for a zip that is not one, is truncated, or has a damaged member.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, NotImplementedError)


def _stream(
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    where: Path,
    limit: int,
    left: int | None = None,
    write: Callable[[bytes], object] | None = None,
) -> tuple[str, int]:
    """Inflate one entry in chunks, passing each to ``write``; return (sha256 hex, real size).

    Stops with InvalidInputError as soon as the real bytes pass ``limit`` (per file) or ``left``
    (what remains of the limit in total), or when the real size differs from the declared one.
    zipfile itself stops reading at the size the header declares, silently; the copy of the
    entry's record opened here declares one byte more than can be accepted, so what gets counted
    is the real length. Its CRC check is off because it would fire at that forced end; the
    manifest's sha256 is the check that counts.
    """
    left = limit if left is None else left
    if info.file_size > limit:
        raise InvalidInputError(f"{info.filename} declares {info.file_size} bytes, over the limit of {limit} per file", where)
    probe = copy.copy(info)
    probe.file_size = min(limit, left) + 1
    probe.CRC = None
    digest, size = hashlib.sha256(), 0
    try:
        member = zf.open(probe)
    except _ZIP_ERRORS as e:
        raise _corrupt(e, where) from e
    with member:
        while True:
            try:
                chunk = member.read(_CHUNK)
            except _ZIP_ERRORS as e:
                raise _corrupt(e, where) from e
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise InvalidInputError(
                    f"{info.filename} inflates to more than {limit} bytes, the limit per file "
                    f"(its header declares {info.file_size})", where)
            if size > left:
                raise InvalidInputError(f"the zip's files inflate to more than the limit in total, at {info.filename}", where)
            digest.update(chunk)
            if write is not None:
                write(chunk)
    if size != info.file_size:
        raise InvalidInputError(f"{info.filename} declares {info.file_size} bytes but holds {size}", where)
    return digest.hexdigest(), size


def _check_entry(info: zipfile.ZipInfo, where: Path) -> None:
    """A plain file with a relative, normalised path: no links, folders, special files,
    encryption, absolute or drive paths, backslashes, empty, ``.`` or ``..`` parts, NUL bytes."""
    name = info.filename
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        raise InvalidInputError(f"symbolic link entry in the zip: {name!r}", where)
    if info.is_dir() or kind == stat.S_IFDIR:
        raise InvalidInputError(f"folder entry in the zip (`mribundles pack` writes none): {name!r}", where)
    if kind not in (0, stat.S_IFREG):
        raise InvalidInputError(f"special file entry in the zip: {name!r}", where)
    if info.flag_bits & 0x1:
        raise InvalidInputError(f"encrypted entry in the zip: {name!r}", where)
    parts = name.split("/")
    if (info.orig_filename != name or name.startswith("/") or "\\" in name or ":" in name
            or any(p in ("", ".", "..") for p in parts)):
        raise InvalidInputError(f"unsafe path in the zip: {info.orig_filename!r}", where)


def _entries(zf: zipfile.ZipFile, where: Path, max_entry: int, max_total: int) -> dict[str, zipfile.ZipInfo]:
    """The zip's entries by name, after `_check_entry`, with no two names that one disk could
    confuse (equal, or equal ignoring case and Unicode normalisation), and declared sizes within
    the limits (the real sizes are counted when the entries are read)."""
    infos = zf.infolist()
    if len(infos) > MAX_ENTRIES:
        raise InvalidInputError(f"{len(infos)} entries in the zip, over the limit of {MAX_ENTRIES}", where)
    entries: dict[str, zipfile.ZipInfo] = {}
    folded: set[str] = set()
    for info in infos:
        _check_entry(info, where)
        key = unicodedata.normalize("NFC", info.filename).casefold()
        if key in folded:
            raise InvalidInputError(f"duplicate entry name in the zip: {info.filename!r}", where)
        folded.add(key)
        if info.file_size > max_entry:
            raise InvalidInputError(
                f"{info.filename} declares {info.file_size} bytes, over the limit of {max_entry} per file", where)
        entries[info.filename] = info
    declared = sum(i.file_size for i in infos)
    if declared > max_total:
        raise InvalidInputError(f"entries declare {declared} bytes in all, over the limit of {max_total}", where)
    return entries


@dataclass(frozen=True)
class Package:
    """A zip whose manifest matched its content byte for byte.

    ``signature`` is the signature record (None when unsigned); ``signed_by`` the trusted public
    key file that verified it, or None when it was not checked (no trusted keys given) or there
    is none. ``max_entry_bytes``/``max_total_bytes`` are the limits it was checked with, and hold
    for every later read.
    """

    path: Path
    name: str
    version: str
    files: dict[str, str]
    signature: dict | None
    signed_by: Path | None
    max_entry_bytes: int = MAX_ENTRY_BYTES
    max_total_bytes: int = MAX_TOTAL_BYTES

    def paths(self) -> list[str]:
        """The bundle's files as paths inside the bundle (``configs/metadata.json``), sorted."""
        return sorted(arcname.split("/", 1)[1] for arcname in self.files)

    def read(self, rel: str) -> bytes:
        """A bundle file by its path inside the bundle (``configs/metadata.json``), streamed within
        the limits and checked against its manifest sha256 again (the zip may have changed)."""
        arcname = f"{self.name}/{rel}"
        if arcname not in self.files:
            raise InvalidInputError(f"{arcname} is not in the manifest", self.path)
        buffer = io.BytesIO()
        with _open_zip(self.path) as zf:
            digest, _ = _stream(zf, _member(zf, arcname, self.path), self.path, self.max_entry_bytes, write=buffer.write)
        if digest != self.files[arcname]:
            raise InvalidInputError(f"content of {arcname} changed since it was checked", self.path)
        return buffer.getvalue()


def _member(zf: zipfile.ZipFile, arcname: str, where: Path) -> zipfile.ZipInfo:
    """The entry ``arcname`` of a zip checked earlier; gone means the zip changed since."""
    try:
        return zf.getinfo(arcname)
    except KeyError:
        raise InvalidInputError(f"{arcname} is no longer in the zip (it changed since it was checked)", where) from None


def _open_zip(path: Path) -> zipfile.ZipFile:
    """``zipfile.ZipFile(path)``, with a file that is not a zip refused naming it."""
    try:
        return zipfile.ZipFile(path)
    except _ZIP_ERRORS as e:
        raise _corrupt(e, path) from e


def open_package(
    path: str | os.PathLike,
    trusted_keys: str | os.PathLike | None = None,
    max_entry_bytes: int | None = None,
    max_total_bytes: int | None = None,
) -> Package:
    """Check a bundle zip: its entries, the manifest against the content, and, with
    ``trusted_keys``, the signature. Nothing is written.

    Raises InvalidInputError naming the zip: not a zip, truncated, an unsafe, linked, special,
    duplicate or encrypted entry, no manifest, an entry missing, extra or altered, a size over
    the limits (default `MAX_ENTRY_BYTES`, `MAX_TOTAL_BYTES`) or other than declared, an unsafe
    bundle name or version, or (with ``trusted_keys``) a signature that is not by a trusted key
    or does not match. An unsigned zip passes with ``signature`` None: whether that is
    acceptable is the caller's decision (see `install`).
    """
    path = Path(path)
    max_entry = MAX_ENTRY_BYTES if max_entry_bytes is None else max_entry_bytes
    max_total = MAX_TOTAL_BYTES if max_total_bytes is None else max_total_bytes
    if not path.is_file():
        raise InvalidInputError("bundle zip not found", path)
    with _open_zip(path) as zf:
        entries = _entries(zf, path, max_entry, max_total)
        if MANIFEST not in entries:
            raise InvalidInputError(f"no {MANIFEST} in the zip (not packed by `mribundles pack`)", path)
        manifest_bytes = _read_small(zf, entries[MANIFEST], path)
        signature_bytes = _read_small(zf, entries[SIGNATURE], path) if SIGNATURE in entries else None
        manifest = _parse_manifest(manifest_bytes, path)
        name = check_safe_name(manifest["bundle"], "name", path)
        check_safe_name(manifest["version"], "version", path)
        expected = manifest["files"]
        for arcname in expected:
            _check_arcname(arcname, name, path)
        content = set(entries) - {MANIFEST, SIGNATURE}
        if missing := sorted(set(expected) - content):
            raise InvalidInputError(f"file listed in the manifest is missing from the zip: {missing[0]}", path)
        if extra := sorted(content - set(expected)):
            raise InvalidInputError(f"file in the zip is not in the manifest: {extra[0]}", path)
        total = len(manifest_bytes) + len(signature_bytes or b"")
        for arcname in sorted(expected):
            digest, size = _stream(zf, entries[arcname], path, max_entry, max_total - total)
            total += size
            if digest != expected[arcname]:
                raise InvalidInputError(f"content of {arcname} does not match its manifest sha256", path)

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
    return Package(path, name, manifest["version"], expected, record, signed_by, max_entry, max_total)


def _read_small(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: Path) -> bytes:
    buffer = io.BytesIO()
    _stream(zf, info, where, MAX_MANIFEST_BYTES, write=buffer.write)
    return buffer.getvalue()


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
    if not all(isinstance(v, str) for v in manifest["files"].values()):
        raise InvalidInputError(f"{MANIFEST}: every file needs a sha256 string", path)
    return manifest


def _check_arcname(arcname: str, name: str, path: Path) -> None:
    """One top-level folder named for the bundle, then one of the bundle's parts; no absolute,
    drive or parent paths."""
    parts = PurePosixPath(arcname).parts
    top_file = len(parts) == 2 and parts[1] == "LICENSE"
    in_folder = len(parts) > 2 and parts[1] in BUNDLE_PARTS and parts[1] != "LICENSE"
    unsafe = arcname.startswith("/") or "\\" in arcname or ":" in arcname or ".." in parts
    if unsafe or parts[0] != name or not (top_file or in_folder):
        raise InvalidInputError(f"unsafe or misplaced path in the manifest: {arcname!r}", path)


def extract_package(package: Package, dest: str | os.PathLike, check: Callable[[Path], None] | None = None) -> Path:
    """Unpack a checked package as ``dest/<name>`` and return that folder.

    The files are streamed to a temporary folder beside it, hashed again and counted against
    the package's limits as they are written (the zip may have changed since `open_package`),
    then ``check(folder)`` runs on the unpacked copy, and only then is the folder renamed into
    place. So a refused, failed or interrupted unpack leaves nothing. An existing ``dest/<name>``
    is refused.
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
        with _open_zip(package.path) as zf:
            total = 0
            for arcname, expected in sorted(package.files.items()):
                out = staging / arcname
                if not out.resolve().is_relative_to(staging.resolve()):  # _check_arcname makes this impossible
                    raise InvalidInputError(f"unsafe path in the manifest: {arcname!r}", package.path)
                out.parent.mkdir(parents=True, exist_ok=True)
                with open(out, "xb") as f:
                    digest, size = _stream(zf, _member(zf, arcname, package.path), package.path, package.max_entry_bytes,
                                           package.max_total_bytes - total, f.write)
                total += size
                if digest != expected:
                    raise InvalidInputError(f"content of {arcname} changed since it was checked", package.path)
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
