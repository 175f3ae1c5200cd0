"""The one exception type for bad input, raised at the edge (reading a file, parsing a config)."""

from __future__ import annotations

import logging
import os
import sys


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


def find_refusal(exc: BaseException | None) -> str | None:
    """The one-line message for an exception that refuses the user's input or setup, else None.

    A refusal is an `InvalidInputError` anywhere in the cause/context chain (`find_input_error`),
    or an ``OSError`` that names a file (an output folder that is a file, a read-only or full
    disk, a missing weights file), raised itself or as the explicit cause (``raise ... from``)
    of the wrappers MONAI and ignite put around it. Every other exception is a fault of the
    code, and keeps its traceback.
    """
    error = find_input_error(exc)
    if error is not None:
        return str(error)
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
            return f"{exc.filename}: {exc.strerror}"
        seen.add(id(exc))
        exc = exc.__cause__
    return None


class RefusalLogFilter(logging.Filter):
    """Drops the log records emitted while a refusal (`find_refusal`) is being handled.

    ignite logs "Current run is terminating due to exception: applying transform <...>" from
    inside its ``except`` block, before any handler sees the exception; during that call
    ``sys.exc_info()`` is the exception, which is how the filter knows. Records logged while
    anything else is handled pass, and all pass with MRIBUNDLES_TRACEBACK=1.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if os.environ.get("MRIBUNDLES_TRACEBACK") == "1":
            return True
        return find_refusal(sys.exc_info()[1]) is None


def quiet_refusals(logger: logging.Logger) -> None:
    """Add one `RefusalLogFilter` to ``logger`` (idempotent)."""
    if not any(isinstance(f, RefusalLogFilter) for f in logger.filters):
        logger.addFilter(RefusalLogFilter())


def is_monai_bundle_run() -> bool:
    """Whether this process is MONAI's bundle command (``python -m monai.bundle ...``, also as a
    ``torchrun -m monai.bundle`` worker): its ``__main__`` module is ``monai.bundle.__main__``.

    Read from the import system, which records what ``-m`` ran; the command line is not parsed.
    """
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", None) == "monai.bundle.__main__"


def install_excepthook() -> None:
    """Report uncaught refusals (`find_refusal`) as one line on stderr (exit status stays 1).

    For a command-line program whose entry point is not ours: a bundle run, where MONAI's
    ``python -m monai.bundle run`` runs our configs, so that a corrupt or missing k-space file
    ends with `error: <file>: <problem>` instead of three chained tracebacks. The `mribundles`
    command needs no hook (`mribundles.cli.main` reports refusals itself). Every other
    exception, and every exception when MRIBUNDLES_TRACEBACK=1, keeps the report of the hook
    installed before, which it calls. Installing it twice installs it once.
    """
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        message = None if os.environ.get("MRIBUNDLES_TRACEBACK") == "1" else find_refusal(exc)
        if message is None:
            previous(exc_type, exc, tb)
        else:
            print(f"error: {message}", file=sys.stderr)

    if getattr(sys.excepthook, "__module__", None) != __name__:
        sys.excepthook = hook
