"""Small real data shipped with the library, so the demo and the tests run out of the box.

See NOTICE.md beside this file for every file's source and license.
"""

from __future__ import annotations

from pathlib import Path

SAMPLE_DIR = Path(__file__).resolve().parent


def path(name: str) -> str:
    """Absolute path of a shipped sample file."""
    file = SAMPLE_DIR / name
    if not file.is_file():
        raise FileNotFoundError(f"no sample file {name!r} in {SAMPLE_DIR}")
    return str(file)
