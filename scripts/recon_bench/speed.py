"""``speed``: ours and its peer in eval mode under `torch.inference_mode`, interleaved runs,
their medians and the ratio ours / peer."""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from mribundles.errors import InvalidInputError

from . import REPO
from .peers import peer_entries
from .speed_models import SIZE, SIZE_OPTIONS, SPEED_MODELS, benchmark_slice, bundle_network, size_overrides


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def timed(model: torch.nn.Module, args: tuple) -> tuple[float, torch.Tensor]:
    with torch.inference_mode():
        start = time.perf_counter()
        out = model(*args)
        return time.perf_counter() - start, out


def interleaved_times(entries: dict, repeats: int, warmup: int) -> tuple[dict[str, list[float]], dict]:
    """Seconds of `repeats` runs of every entry {name: (module, inputs, ...)}, after `warmup`
    untimed ones, in ABC CBA order so that load drifting on the machine hits all alike;
    and each entry's last output."""
    outputs = {}
    for _ in range(warmup):
        for name, (model, inputs, *_) in entries.items():
            outputs[name] = timed(model, inputs)[1]
    times: dict[str, list[float]] = {name: [] for name in entries}
    names = list(entries)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            seconds, outputs[name] = timed(*entries[name][:2])
            times[name].append(seconds)
    return times, outputs


def speed(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    spec = SPEED_MODELS[args.model]
    config = args.config or spec["config"]
    try:
        overrides = size_overrides(args.model, {o: getattr(args, o) for o in SIZE_OPTIONS}, config)
    except InvalidInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    ours, sizes = bundle_network(config, overrides, list(spec["sizes"].values()))
    slice_args = benchmark_slice(args.coils, args.acceleration, args.center_fraction, args.seed)
    entries = peer_entries(args.model, ours, sizes, slice_args)
    if entries is None:
        return 2
    for model, *_ in entries.values():
        model.eval()

    peer = spec["peer"]
    print(f"config: {config.relative_to(REPO) if config.is_relative_to(REPO) else config}")
    print("sizes: " + ", ".join(f"{k}={v}" for k, v in sizes.items()) + (f" (overridden: {', '.join(overrides)})" if overrides else " (the bundle's)"))
    print(f"input: {args.coils} coils x {SIZE}x{SIZE}, random1d R={args.acceleration:g}, "
          f"{slice_args[1][2]} central columns; threads={torch.get_num_threads()}, "
          f"warm-up {args.warmup}, repeats {args.repeats}")
    print("timed, each in eval mode under torch.inference_mode:")
    for name, (_, _, includes) in entries.items():
        print(f"  {name}: {includes}")

    times, outputs = interleaved_times(entries, args.repeats, args.warmup)
    names = list(entries)
    ours_name, ref_name = names[:2]
    shapes = {name: tuple(outputs[name].shape) for name in names[:2]}
    # Ours returns (B, 1, ky, kx), the peers (B, ky, kx): the same image once the channel is dropped.
    same_shape = shapes[ours_name][:1] + shapes[ours_name][2:] == shapes[ref_name] and shapes[ours_name][1] == 1
    medians = {name: statistics.median(t) for name, t in times.items()}
    ratio = medians[ours_name] / medians[ref_name]

    print()
    print(f"{'model':<36} {'params':>10} {'median s':>9} {'runs s':<30} output")
    for name, (model, *_) in entries.items():
        runs = " ".join(f"{t:.2f}" for t in times[name])
        print(f"{name:<36} {count_params(model):>10,} {medians[name]:>9.3f} {runs:<30} {shapes.get(name, '')}")
    print(f"ratio ours/{peer}: {ratio:.3f}")
    if len(names) > 2:  # the shared part, taken out of both medians (a difference of medians, not a timing)
        shared = medians[names[2]]
        print(f"ratio ours/{peer} without the shared part (both medians minus the {shared:.3f} s of {names[2]!r}): "
              f"{(medians[ours_name] - shared) / (medians[ref_name] - shared):.3f}")
    print(f"output shapes agree (ours (B,1,ky,kx) vs {peer} (B,ky,kx)): {'yes' if same_shape else 'NO'}")
    print(f"verdict: {'PASS' if ratio <= 1.0 else 'FAIL'} (target ratio ours/{peer} <= 1.0)")
    return 0 if same_shape else 1
