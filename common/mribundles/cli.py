"""The `mribundles` command line (also `python -m mribundles`).

Subcommands register themselves in `COMMANDS`: a name maps to a function that adds its
arguments to a subparser and a function that runs it. Bad input (InvalidInputError,
FileNotFoundError, ValueError) becomes one line `error: <message>` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass

from mribundles.physics.masks import MASK_KINDS

__all__ = ["COMMANDS", "Command", "main", "register"]


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def register(name: str, help: str, add_arguments: Callable, run: Callable) -> None:
    """Add a subcommand: `add_arguments(subparser)` declares it, `run(args) -> exit code` runs it."""
    COMMANDS[name] = Command(help, add_arguments, run)


# --- evaluate-recon -------------------------------------------------------------------------


def _evaluate_recon_arguments(parser: argparse.ArgumentParser) -> None:
    from mribundles.baselines.cs import DEFAULT_LAMDA
    from mribundles.evaluation import DEFAULT_CS_ITERS

    parser.add_argument("--bundle", required=True, help="reconstruction bundle folder")
    parser.add_argument("--kspace", required=True, help="FULLY SAMPLED k-space file (.h5, .npy, .cfl)")
    parser.add_argument("--mask", choices=MASK_KINDS, default="random1d")
    parser.add_argument("--acceleration", type=float, default=4)
    parser.add_argument("--center-fraction", type=float, default=None, help="default 0.32 / acceleration")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cs-lamda", type=float, default=DEFAULT_LAMDA, help="relative L1 weight of the CS baseline")
    parser.add_argument("--cs-iters", type=int, default=DEFAULT_CS_ITERS)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def format_recon_table(result: dict) -> str:
    """A fixed-width table of evaluate_recon's result, with a header naming the data and settings."""
    s = result["settings"]
    lines = [
        f"data: {result['data_file']} ({result['num_slices']} slices)",
        f"mask: {s['mask']} R={s['acceleration']:g} centre={s['center_fraction']:g} seed={s['seed']}  "
        f"device: {s['device']}",
        "",
        f"{'method':<28} {'NMSE':>9} {'PSNR':>7} {'SSIM':>7} {'s/slice':>8}",
    ]
    for method, m in result["methods"].items():
        lines.append(
            f"{method:<28} {m['nmse']:9.5f} {m['psnr']:7.2f} {m['ssim']:7.4f} {m['seconds_per_slice']:8.3f}"
        )
    return "\n".join(lines)


def _evaluate_recon_run(args: argparse.Namespace) -> int:
    from mribundles.evaluation import evaluate_recon

    result = evaluate_recon(
        args.bundle,
        args.kspace,
        mask=args.mask,
        acceleration=args.acceleration,
        center_fraction=args.center_fraction,
        seed=args.seed,
        device=args.device,
        cs_lamda=args.cs_lamda,
        cs_iters=args.cs_iters,
    )
    print(json.dumps(result, indent=2) if args.json else format_recon_table(result))
    return 0


register(
    "evaluate-recon",
    "compare a reconstruction bundle with zero-filling and L1-wavelet CS on fully sampled k-space",
    _evaluate_recon_arguments,
    _evaluate_recon_run,
)


# --- entry point ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mribundles", description="MRI Bundles command line")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(name, help=command.help, description=command.help)
        command.add_arguments(sub)
        sub.set_defaults(_run=command.run)
    return parser


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default sys.argv[1:]), run the subcommand and return its exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args._run(args)
    except (ValueError, FileNotFoundError) as exc:  # InvalidInputError is a ValueError
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
