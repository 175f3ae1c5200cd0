"""Batch preparation for MONAI engines with the library's explicit keys."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.engines.utils import PrepareBatch


class PrepareBatchKeys(PrepareBatch):
    """Take the network input, the label and extra network arguments from named batch keys.

    MONAI's default preparation reads `image` and `label`; a reconstruction network takes
    k-space and a mask, and a target that is not a label. `network(batch[input_key],
    *[batch[k] for k in extra_keys])` is what the engine then runs. A registration loss needs
    more than one target (the moving and fixed images, their labels): ``label_key`` may then
    be a list of keys, and the label is a dict of those present in the batch.
    """

    def __init__(self, input_key: str, label_key: str | Sequence[str] | None = None, extra_keys: Sequence[str] = ()):
        self.input_key, self.label_key, self.extra_keys = input_key, label_key, tuple(extra_keys)

    def __call__(self, batchdata: dict, device=None, non_blocking: bool = False, **kwargs):
        def move(key: str) -> torch.Tensor:
            return batchdata[key].to(device=device, non_blocking=non_blocking, **kwargs)

        if isinstance(self.label_key, str):
            label = move(self.label_key) if self.label_key in batchdata else None
        elif self.label_key:
            label = {k: move(k) for k in self.label_key if k in batchdata}
        else:
            label = None
        return move(self.input_key), label, tuple(move(k) for k in self.extra_keys), {}
