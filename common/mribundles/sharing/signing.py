"""Ed25519 keys and detached signatures for bundle manifests.

A site signs the manifest of a packed bundle (the list of every file's SHA-256), not the zip:
the manifest pins every byte, and a signature over a few hundred bytes is stable however the
zip is recompressed. Keys are PEM files: ``NAME.key`` (private, PKCS#8, mode 0600) and
``NAME.pub`` (public, SubjectPublicKeyInfo). A folder of ``*.pub`` files is a set of trusted keys.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from mribundles.errors import InvalidInputError
from mribundles.io.atomic import atomic_path

__all__ = ["generate_keypair", "key_id", "load_trusted_keys", "sign", "verify_signature"]

ALGORITHM = "ed25519"


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short fingerprint: the first 16 hex digits of the SHA-256 of the raw public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(name: str, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``out_dir/NAME.key`` and ``out_dir/NAME.pub``; refuse to overwrite either."""
    out_dir = Path(out_dir)
    private_path, public_path = out_dir / f"{name}.key", out_dir / f"{name}.pub"
    for path in (private_path, public_path):
        if path.exists():
            raise InvalidInputError("key file exists; refusing to overwrite it", path)
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with atomic_path(private_path) as tmp:
        # Created 0600 before any secret byte is written.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private_pem)
    with atomic_path(public_path) as tmp:
        tmp.write_bytes(public_pem)
    return private_path, public_path


def _load_private_key(path: str | os.PathLike) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise InvalidInputError(f"cannot read private key: {' '.join(str(e).split())}", path) from e
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidInputError("not an Ed25519 private key", path)
    return key


def sign(message: bytes, private_key_path: str | os.PathLike) -> dict:
    """A detached signature record: ``{"algorithm", "key_id", "signature"}`` (base64)."""
    key = _load_private_key(private_key_path)
    return {
        "algorithm": ALGORITHM,
        "key_id": key_id(key.public_key()),
        "signature": base64.b64encode(key.sign(message)).decode("ascii"),
    }


def load_trusted_keys(folder: str | os.PathLike) -> dict[str, tuple[Path, Ed25519PublicKey]]:
    """Every ``*.pub`` in ``folder``, by key id. An unreadable key file is an error, not a skip:
    a silently ignored key would turn a configuration mistake into a refusal that names the wrong
    cause."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInputError("trusted-keys folder not found", folder)
    keys = {}
    for path in sorted(folder.glob("*.pub")):
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except (OSError, ValueError) as e:
            raise InvalidInputError(f"cannot read public key: {' '.join(str(e).split())}", path) from e
        if not isinstance(key, Ed25519PublicKey):
            raise InvalidInputError("not an Ed25519 public key", path)
        keys[key_id(key)] = (path, key)
    if not keys:
        raise InvalidInputError("no *.pub keys in the trusted-keys folder", folder)
    return keys


def verify_signature(message: bytes, record: dict, trusted_dir: str | os.PathLike, source: str | os.PathLike) -> Path:
    """Check ``record`` (from `sign`) over ``message`` against the keys in ``trusted_dir``.

    Returns the trusted key file that made the signature. Raises InvalidInputError naming
    ``source`` when the record is malformed, its key is not trusted, or the signature fails.
    """
    if not isinstance(record, dict) or record.get("algorithm") != ALGORITHM:
        raise InvalidInputError(f"signature record is not an {ALGORITHM} signature", source)
    keys = load_trusted_keys(trusted_dir)
    kid = record.get("key_id")
    if kid not in keys:
        raise InvalidInputError(f"signed by key {kid}, which is not among the trusted keys in {trusted_dir}", source)
    path, public_key = keys[kid]
    try:
        public_key.verify(base64.b64decode(record.get("signature", ""), validate=True), message)
    except (InvalidSignature, ValueError) as e:
        raise InvalidInputError(f"signature by {path.name} does not match the manifest", source) from e
    return path
