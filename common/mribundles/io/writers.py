"""MONAI image writers that write atomically."""

from __future__ import annotations

import logging

from monai.config import PathLike
from monai.data import NibabelWriter

from mribundles.io.atomic import atomic_path

logger = logging.getLogger(__name__)


class AtomicNibabelWriter(NibabelWriter):
    """``monai.data.NibabelWriter`` whose ``write`` goes through ``atomic_path``.

    Use it where a bundle saves images, so an interrupted run never leaves half a NIfTI:
    ``SaveImaged(keys="pred", writer="mribundles.io.AtomicNibabelWriter", ...)``.
    """

    def write(self, filename: PathLike, verbose: bool = False, **obj_kwargs) -> None:
        """Write ``filename`` atomically; arguments as ``NibabelWriter.write``."""
        if verbose:  # log the final name, not the temporary one the parent would log
            logger.info(f"writing: {filename}")
        with atomic_path(filename) as tmp:
            super().write(tmp, verbose=False, **obj_kwargs)
