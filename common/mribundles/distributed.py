"""One process per GPU under ``torchrun``: the steps of the multi-GPU overlays, by name.

A bundle's ``multi_gpu_train.json`` (or ``multi_gpu_inference.json``) is laid over its
single-process config and names these functions by ``_target_``:

- `init` and `finish` open and close the process group (NCCL on GPUs, Gloo on CPUs) and
  `local_device` is the GPU that ``torchrun`` gave this process (``LOCAL_RANK``);
- `data_parallel` wraps the network in ``DistributedDataParallel``;
- `rank_handlers` (and `attach`) keep, on every rank but 0, only the handlers that neither log,
  save nor track, so that one process talks and writes;
- `seed_by_rank` seeds each process differently, so random draws (patches, masks, the samples
  of `iteration_sampler`) differ between processes;
- `shard` and `run_shard` split an inference datalist among the processes.

`iteration_sampler` is the training sampler of the bundles whose epoch is a number of iterations
rather than a pass over their data; it shares those iterations among the processes when there
are several, so the same ``train.json`` serves one process or many. `mixture_sampler` does the
same over the parts of a ``ConcatDataset`` drawn in given shares (synthesised and real data). Outside a distributed run
every function here behaves as for a single process of rank 0.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import ConcatDataset, Dataset, RandomSampler, WeightedRandomSampler

__all__ = ["attach", "data_parallel", "finish", "init", "iteration_sampler", "local_device", "mixture_sampler",
           "rank", "rank_handlers", "run_shard", "seed_by_rank", "shard", "world_size"]


def _rank_zero_only() -> tuple[type, ...]:
    """The handler classes that only rank 0 runs: they log (StatsHandler), save files
    (CheckpointSaver, MetricsSaver) or track (MLFlowHandler); on every rank they would repeat
    its lines, or write the same files at once."""
    from monai.handlers import CheckpointSaver, MetricsSaver, MLFlowHandler, StatsHandler

    return (StatsHandler, CheckpointSaver, MLFlowHandler, MetricsSaver)



def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank; 0 outside a distributed run."""
    return dist.get_rank() if _initialized() else 0


def world_size() -> int:
    """How many processes run; 1 outside a distributed run."""
    return dist.get_world_size() if _initialized() else 1


def local_device() -> torch.device:
    """The GPU ``torchrun`` gave this process (``cuda:<LOCAL_RANK>``), or the CPU without GPUs."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")


def init(device: str | torch.device) -> None:
    """Join the process group (once; NCCL with GPUs, Gloo without) and make ``device`` this
    process's current GPU."""
    if not _initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(device)


def finish() -> None:
    """Leave the process group, if this process joined one."""
    if _initialized():
        dist.destroy_process_group()


def data_parallel(module: torch.nn.Module, device: str | torch.device) -> torch.nn.Module:
    """``module`` on ``device``, wrapped in ``DistributedDataParallel`` (on that GPU, or on the
    CPU without GPUs): gradients are averaged over the processes at every step."""
    device_ids = [device] if torch.cuda.is_available() else None
    return torch.nn.parallel.DistributedDataParallel(module.to(device), device_ids=device_ids)


def rank_handlers(handlers: Iterable) -> list:
    """The handlers of ``handlers`` that this process runs: all of them on rank 0, and on the
    other ranks those that neither log, save nor track (`_rank_zero_only`)."""
    handlers = list(handlers)
    if rank() == 0:
        return handlers
    skipped = _rank_zero_only()
    return [handler for handler in handlers if not isinstance(handler, skipped)]


def attach(engine, handlers: Iterable) -> None:
    """Attach the handlers that this process runs (`rank_handlers`) to ``engine``."""
    for handler in rank_handlers(handlers):
        handler.attach(engine)


def seed_by_rank(seed: int = 0) -> None:
    """MONAI's ``set_determinism`` with ``seed`` plus this process's rank: every process draws
    its own random numbers, reproducibly."""
    from monai.utils import set_determinism

    set_determinism(seed=seed + rank())


def iteration_sampler(dataset: Dataset, iterations: int, batch_size: int = 1) -> RandomSampler:
    """Draws, with replacement, ``batch_size`` items for each of ``iterations`` iterations of an
    epoch; under ``torchrun`` each of N processes draws ``max(1, iterations // N)`` of them.

    For training sets whose epoch is a number of iterations (patches of a few volumes,
    synthesised images, pairs) rather than one pass over them. It draws from torch's global
    generator, which `seed_by_rank` seeds differently in each process.
    """
    return RandomSampler(dataset, replacement=True, num_samples=max(1, iterations // world_size()) * batch_size)


def mixture_sampler(dataset: ConcatDataset, shares: Sequence[float], iterations: int, batch_size: int = 1) -> WeightedRandomSampler:
    """As `iteration_sampler`, over the parts of ``dataset`` in the given ``shares`` whatever their
    lengths: part ``i`` gives ``shares[i] / sum(shares)`` of the draws (one real volume beside an
    epoch's worth of synthesised items, say)."""
    if len(shares) != len(dataset.datasets) or min(shares) < 0 or sum(shares) <= 0:
        raise ValueError(f"shares {list(shares)} must be one non-negative number per part of the dataset ({len(dataset.datasets)})")
    weights = torch.cat([torch.full((len(part),), share / len(part), dtype=torch.double)
                         for part, share in zip(dataset.datasets, shares)])
    return WeightedRandomSampler(weights, num_samples=max(1, iterations // world_size()) * batch_size, replacement=True)


def shard(items: Sequence) -> list:
    """This process's share of ``items`` (studies to infer): contiguous, in order, the first
    processes taking one more when they do not divide evenly; possibly empty."""
    from monai.data import partition_dataset

    return partition_dataset(items, num_partitions=world_size(), shuffle=False, even_divisible=False)[rank()]


def run_shard(engine, items: Sequence) -> None:
    """Run ``engine`` over this process's `shard` of ``items`` (nothing when it is empty), then
    wait until every process has run its own."""
    mine = shard(items)
    if len(mine):
        engine.run(mine)
    if _initialized():
        dist.barrier()
