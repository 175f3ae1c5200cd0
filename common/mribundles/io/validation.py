"""Checks shared by the readers and writers; each failure raises ``InvalidInputError``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from mribundles.errors import InvalidInputError


def one_line(exc: BaseException, limit: int = 200) -> str:
    """A backend's exception text collapsed to one short line (ITK's span many lines)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def require_file(path: str | os.PathLike) -> Path:
    """Return ``path`` as a ``Path`` if it is an existing, readable file."""
    path = Path(path)
    if not path.exists():
        raise InvalidInputError("file not found", path)
    if not path.is_file():
        raise InvalidInputError("not a regular file", path)
    if not os.access(path, os.R_OK):
        raise InvalidInputError("file is not readable (permission denied)", path)
    return path


def to_numpy(array: np.ndarray | torch.Tensor) -> np.ndarray:
    """A numpy view of ``array`` (torch tensors are detached and moved to the host)."""
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def require_finite(array: np.ndarray, path: str | os.PathLike | None, what: str) -> None:
    """Refuse NaN or Inf anywhere in ``array``."""
    if not np.isfinite(array).all():
        raise InvalidInputError(f"{what} contains NaN or Inf values", path)


def require_kspace_dims(shape: tuple[int, ...], path: str | os.PathLike | None = None) -> tuple[int, ...]:
    """``shape`` if it is one slice (coil, ky, kx) or a volume (slice, coil, ky, kx); otherwise
    InvalidInputError. Shared by the readers and `io.kspace.kspace_shape`, so a file that only
    its header was read from is refused for the same reason as one that was loaded."""
    if len(shape) not in (3, 4):
        raise InvalidInputError(
            f"k-space has {len(shape)} dimensions {shape}; expected 3 (coil, ky, kx) or 4 (slice, coil, ky, kx)",
            path,
        )
    return shape


def as_kspace_tensor(array: np.ndarray, path: str | os.PathLike | None) -> torch.Tensor:
    """Validate multi-coil k-space and return it as a new complex64 tensor.

    Args:
        array: (coil, ky, kx) for one slice or (slice, coil, ky, kx) for a volume; complex.
        path: the file the array came from (or goes to), named in any error.

    Returns:
        torch complex64 tensor of the same shape, owning its memory.
    """
    if not np.iscomplexobj(array):
        raise InvalidInputError(
            f"k-space is real-valued (dtype {array.dtype}); expected a complex array", path
        )
    require_kspace_dims(tuple(array.shape), path)
    if array.size == 0:
        raise InvalidInputError(f"k-space is empty (shape {tuple(array.shape)})", path)
    require_finite(array, path, "k-space")
    # All-zero k-space is not refused here: a slice outside the head in a multi-slice file is
    # legitimately empty, and the methods that need signal say so themselves.
    peak = float(np.abs(array).max())
    # The Fourier transform sums ky * kx samples: beyond this bound complex64 overflows to Inf.
    limit = float(np.finfo(np.float32).max) / (array.shape[-2] * array.shape[-1])
    if peak > limit:
        raise InvalidInputError(f"k-space magnitude {peak:.3g} exceeds {limit:.3g}: the Fourier transform "
                                "would overflow complex64", path)
    return torch.from_numpy(np.array(array, dtype=np.complex64, order="C", copy=True))
