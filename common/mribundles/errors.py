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


def find_input_error(exc: BaseException | None) -> InvalidInputError | None:
    """The InvalidInputError in an exception's cause/context chain, if any.

    MONAI wraps whatever a transform or a config expression raises in RuntimeErrors of its own,
    so the user's actual problem sits deep in the chain.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, InvalidInputError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def install_excepthook() -> None:
    """Report uncaught bad-input errors as one line on stderr (exit status stays 1).

    Bundle configs import mribundles, so `python -m monai.bundle run` with a corrupt or missing
    k-space file ends with `error: <file>: <problem>` instead of three chained tracebacks. Every
    other exception, and every exception when MRIBUNDLES_TRACEBACK=1, keeps Python's report.
    """
    import sys

    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        error = None if os.environ.get("MRIBUNDLES_TRACEBACK") == "1" else find_input_error(exc)
        if error is None:
            previous(exc_type, exc, tb)
        else:
            print(f"error: {error}", file=sys.stderr)

    if getattr(sys.excepthook, "__module__", None) != __name__:
        sys.excepthook = hook
