"""Atomic file writes: a run that is interrupted leaves the old file or none, never half a file."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mribundles.errors import InvalidInputError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write to; move it onto ``path`` when the body succeeds.

    The temporary file lives in a private temporary folder *inside* ``path``'s folder and has
    exactly ``path``'s name, so (1) ``os.replace`` stays on one file system and is atomic, and
    (2) every suffix is kept (``.nii.gz`` stays ``.nii.gz``), so nibabel and ITK choose the
    format from the name as they would for ``path``. Writing into a fresh folder, rather than to
    a ``mkstemp`` file, also lets the writer create the file itself with the usual permissions
    (``mkstemp`` files are 0600).

    On an exception in the body the temporary folder is removed and ``path`` is untouched.
    Parent folders of ``path`` are created; a folder at ``path``, or a file where one of its
    folders must be, raises ``InvalidInputError`` before anything is written. Only the file
    named ``path`` is moved: writers that add sibling files (``.mhd`` + ``.raw``) need one
    ``atomic_path`` per file.
    """
    path = Path(path)
    if path.is_dir():
        raise InvalidInputError("is a folder, not a file: cannot write over it", path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:  # a file sits where a folder must be
        raise InvalidInputError(f"cannot create its folder {path.parent}: a file is in the way", path) from exc
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        tmp = tmp_dir / path.name
        yield tmp
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
