"""The one exception type for bad input, raised at the edge (reading a file, parsing a config)."""

from __future__ import annotations

import os


class InvalidInputError(ValueError):
    """Bad input: a missing, truncated or corrupt file, a wrong shape, NaNs, a missing key.

    The message always names the offending file (when there is one) and the problem, on one
    line, so that a command-line user sees at once what to fix.
    """

    def __init__(self, problem: str, path: str | os.PathLike | None = None):
        self.problem = problem
        self.path = None if path is None else os.fspath(path)
        super().__init__(problem if self.path is None else f"{self.path}: {problem}")
