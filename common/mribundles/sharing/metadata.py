"""Check a bundle's ``configs/metadata.json`` against the schema we ship.

MONAI's own metadata schema is a download (``metadata["schema"]`` is its URL). Our schema,
``meta_schema.json`` next to this file, was written from MONAI's bundle specification
(``docs/source/mb_specification.rst``). ``monai.bundle.verify_metadata`` downloads the schema only
when ``filepath`` does not exist, so pointing ``filepath`` at the shipped file keeps the check
offline::

    python -m monai.bundle verify_metadata --meta_file bundles/X/configs/metadata.json \
        --filepath common/mribundles/sharing/meta_schema.json
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

from mribundles.errors import InvalidInputError

__all__ = ["SCHEMA_PATH", "load_schema", "verify_bundle_metadata"]

SCHEMA_PATH: Path = Path(__file__).resolve().with_name("meta_schema.json")


def load_schema() -> dict:
    """The shipped metadata schema as a dictionary."""
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        return json.load(f)


def _describe(error) -> str:
    """One line naming the failing key of a ``jsonschema.ValidationError``."""
    where = "/".join(str(p) for p in error.absolute_path)
    if error.validator == "required":
        instance = error.instance if isinstance(error.instance, dict) else {}
        missing = [k for k in error.validator_value if k not in instance]
        key = "/".join([where, missing[0]]) if where and missing else (missing[0] if missing else where)
        return f"missing required key '{key}'"
    message = " ".join(str(error.message).split())
    if len(message) > 200:
        message = message[:197] + "..."
    return f"invalid value for key '{where or '<top level>'}': {message}"


@contextmanager
def _quiet_monai():
    """Silence verify_metadata's input summary and its warning that the schema file has no hash:
    the schema is the one shipped inside this package, not a download."""
    loggers = [logging.getLogger(name) for name in ("monai.bundle.scripts", "monai.apps.utils", "monai.apps")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="No hash value provided")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def verify_bundle_metadata(bundle_dir: str | os.PathLike) -> Path:
    """Verify ``bundle_dir/configs/metadata.json`` with MONAI's ``verify_metadata`` and our schema.

    Returns the path of the verified metadata file. Raises :class:`InvalidInputError` naming the
    file and, on one line, the failing key when the file is missing, unreadable or invalid.
    """
    from jsonschema.exceptions import ValidationError
    from monai.bundle import verify_metadata

    meta_file = Path(bundle_dir) / "configs" / "metadata.json"
    if not meta_file.is_file():
        raise InvalidInputError("metadata file not found", meta_file)
    try:
        with open(meta_file, encoding="utf-8") as f:
            metadata = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidInputError(f"cannot read JSON: {' '.join(str(e).split())}", meta_file) from e
    if not isinstance(metadata, dict):
        raise InvalidInputError("metadata must be a JSON object", meta_file)
    if "schema" not in metadata:
        # MONAI's verify_metadata refuses a file without it (it is the download URL); the
        # specification does not list it, so the schema itself does not require it.
        raise InvalidInputError(
            "missing required key 'schema' (monai.bundle verify_metadata needs the schema URL)", meta_file
        )
    try:
        with _quiet_monai():
            verify_metadata(meta_file=str(meta_file), filepath=str(SCHEMA_PATH))
    except ValidationError as e:  # in case MONAI ever lets jsonschema's error through
        raise InvalidInputError(_describe(e), meta_file) from e
    except ValueError as e:
        # MONAI 1.x re-raises jsonschema's ValidationError as a long ValueError `from` it.
        cause = e.__cause__
        if isinstance(cause, ValidationError):
            raise InvalidInputError(_describe(cause), meta_file) from e
        raise InvalidInputError(" ".join(str(e).split()), meta_file) from e
    return meta_file
