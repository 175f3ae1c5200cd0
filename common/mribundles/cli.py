"""The `mribundles` command line (also `python -m mribundles`).

Subcommands register themselves in `COMMANDS`: a name maps to a function that adds its
arguments to a subparser and a function that runs it: it parses arguments and calls the library
(MLflow runs are built in `mribundles.tracking`). Bad input (InvalidInputError,
FileNotFoundError, ValueError, and any refusal that `mribundles.errors.find_refusal` finds
inside the wrappers MONAI puts around it) becomes one line `error: <message>` on stderr and exit
code 2, in `main` itself: the command needs no exception hook, and calling `main` from Python
changes nothing in the calling process. MRIBUNDLES_TRACEBACK=1 shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
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


def _add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars (they are off anyway when stderr is not a terminal)")


# --- evaluate-recon -------------------------------------------------------------------------


def _evaluate_recon_arguments(parser: argparse.ArgumentParser) -> None:
    from mribundles.baselines.cs import DEFAULT_RADIAL_LAMDA
    from mribundles.evaluation import DEFAULT_CS_ITERS

    parser.add_argument("--bundle", required=True, help="reconstruction bundle folder")
    parser.add_argument("--kspace", required=True, help="FULLY SAMPLED k-space file (.h5, .npy, .cfl)")
    parser.add_argument("--mask", choices=MASK_KINDS, default="random1d")
    parser.add_argument("--acceleration", type=float, default=4)
    parser.add_argument("--center-fraction", type=float, default=None, help="default 0.32 / acceleration")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--spokes", type=int, default=64, help="radial files: golden-angle spokes to keep")
    parser.add_argument("--cs-lamda", type=float, default=None,
                        help=f"relative L1 weight of the CS baseline (default: tuned per mask kind and acceleration, "
                             f"baselines.cs.TUNED_LAMDAS; radial {DEFAULT_RADIAL_LAMDA:g})")
    parser.add_argument("--cs-iters", type=int, default=DEFAULT_CS_ITERS)
    parser.add_argument("--cs-oracle", action="store_true",
                        help="also run ORACLE CS: lamda picked per file by the PSNR against the fully sampled reference "
                             "(an upper bound, listed as 'l1-wavelet (oracle lambda=...)'; the tuned CS is kept)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_quiet(parser)
    parser.add_argument("--output-dir", default=None, help="write the comparison figure here (default with --track: ./eval)")
    parser.add_argument(
        "--track",
        action="store_true",
        help="log to MLflow (MLFLOW_TRACKING_URI, else <output-dir>/mlruns.db): a parent run, one nested run per method",
    )


def format_recon_table(result: dict) -> str:
    """A fixed-width table of evaluate_recon's result, with a header naming the data and settings."""
    s = result["settings"]
    width = max(28, *map(len, result["methods"]))  # the oracle's name carries its lamda
    sampling = (f"radial, {s['spokes']} golden-angle spokes" if s.get("sampling") == "radial"
                else f"mask: {s['mask']} R={s['acceleration']:g} centre={s['center_fraction']:g} seed={s['seed']}")
    lines = [
        f"data: {result['data_file']} ({result['num_slices']} slices)",
        f"{sampling}  device: {s['device']}",
        "",
        f"{'method':<{width}} {'NMSE':>9} {'PSNR':>7} {'SSIM':>7} {'s/slice':>8}",
    ]
    for method, m in result["methods"].items():
        lines.append(
            f"{method:<{width}} {m['nmse']:9.5f} {m['psnr']:7.2f} {m['ssim']:7.4f} {m['seconds_per_slice']:8.3f}"
        )
    return "\n".join(lines)


def _evaluate_recon_run(args: argparse.Namespace) -> int:
    import time
    from functools import partial
    from pathlib import Path

    from mribundles.evaluation import evaluate_recon
    from mribundles.handlers.run_report import require_output_folder
    from mribundles.report import quiet_progress

    start = time.perf_counter()
    output_dir = args.output_dir or ("eval" if args.track else None)
    figure = None
    if output_dir is not None:
        require_output_folder(output_dir)  # before minutes of reconstruction, not after
        figure = Path(output_dir) / f"{Path(args.bundle).resolve().name}_{args.mask}_R{args.acceleration:g}.png"
    evaluate = partial(
        evaluate_recon,
        args.bundle,
        args.kspace,
        mask=args.mask,
        acceleration=args.acceleration,
        center_fraction=args.center_fraction,
        seed=args.seed,
        device=args.device,
        cs_lamda=args.cs_lamda,
        cs_iters=args.cs_iters,
        figure=figure,
        spokes=args.spokes,
        cs_oracle=args.cs_oracle,
    )
    with quiet_progress(args.quiet):  # the bars of evaluate_recon's loops too
        if args.track:
            from mribundles.tracking import track_evaluation

            result, tracking = track_evaluation(evaluate, args.bundle, figure, output_dir)
        else:
            result, tracking = evaluate(), None
    print(json.dumps(result, indent=2) if args.json else format_recon_table(result))
    _print_summary(start, [figure] if figure is not None and figure.is_file() else [], tracking)
    return 0


def _print_summary(start: float, outputs: list, tracking) -> None:
    """A command's closing summary (`mribundles.report.summary_lines`): seconds since ``start``
    (a ``time.perf_counter()``), the files written, the MLflow run (a `TrackingState`, or None
    when not tracked). On stderr: stdout carries the result (a table or JSON) alone."""
    import time

    from mribundles.report import summary_lines

    lines = summary_lines(time.perf_counter() - start, outputs, tracking, untracked="add --track to track it")
    print("\n" + "\n".join(lines), file=sys.stderr)


register(
    "evaluate-recon",
    "compare a reconstruction bundle with zero-filling and L1-wavelet CS on fully sampled k-space",
    _evaluate_recon_arguments,
    _evaluate_recon_run,
)


# --- acceleration-budget --------------------------------------------------------------------
def _budget_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chain", required=True, help="chain bundle folder (e.g. bundles/brain_mri_recon_seg)")
    parser.add_argument("--kspace", required=True, help="FULLY SAMPLED multi-slice k-space file")
    parser.add_argument("--accelerations", type=float, nargs="+", default=[2, 4, 6, 8, 12])
    parser.add_argument("--mask", choices=MASK_KINDS, default="random1d")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--recon-bundle", default=None, help="override the chain's recon_bundle")
    parser.add_argument("--recon-weights", default=None,
                        help="weights for the reconstruction network instead of its bundle's (e.g. the chain's fine-tuned ones)")
    parser.add_argument("--labels", default=None, help="true labels of the imaged volume: also report Dice against them")
    parser.add_argument("--out", default="eval/acceleration_budget", help="folder for budget.json and budget.png")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_quiet(parser)
    parser.add_argument(
        "--track",
        action="store_true",
        help="log to MLflow (MLFLOW_TRACKING_URI, else <out>/mlruns.db): a parent run, one nested run per acceleration",
    )


def _budget_run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from mribundles.chains.budget import acceleration_budget, format_budget_table, plot_budget
    from mribundles.handlers.run_report import require_output_folder
    from mribundles.io.atomic import atomic_path
    from mribundles.report import quiet_progress

    start = time.perf_counter()
    require_output_folder(args.out)  # before the chain runs at every acceleration, not after
    with quiet_progress(args.quiet):  # the accelerations' bar and the reconstruction stage's
        result = acceleration_budget(args.chain, args.kspace, args.accelerations, args.mask, args.seed, args.device,
                                     args.recon_bundle, args.recon_weights, args.labels)
    out = Path(args.out)
    with atomic_path(out / "budget.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    plot_budget(result, out / "budget.png")
    tracking = None
    if args.track:
        from mribundles.tracking import track_budget

        tracking = track_budget(result, out)
    print(json.dumps(result, indent=2) if args.json else format_budget_table(result))
    _print_summary(start, [out / "budget.json", out / "budget.png"], tracking)
    return 0


register(
    "acceleration-budget",
    "run a chain at several accelerations of fully sampled k-space: Dice against the fully sampled result, PSNR, SSIM",
    _budget_arguments,
    _budget_run,
)


# --- sharing: keygen, pack, verify, review, install, publish, fetch ---------------------------
def _keygen_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=".", help="folder for NAME.key and NAME.pub")
    parser.add_argument("--name", default="mribundles", help="key file name, e.g. your site")


def _keygen_run(args: argparse.Namespace) -> int:
    from mribundles.sharing.signing import generate_keypair

    private, public = generate_keypair(args.name, args.out)
    print(f"private key: {private} (keep it secret)\npublic key:  {public} (give it to the sites that trust you)")
    return 0


def _pack_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="bundle folder")
    parser.add_argument("--out", default=".", help="folder for <name>-<version>.zip")
    parser.add_argument("--sign", metavar="KEY", default=None, help="Ed25519 private key file (from `keygen`)")


def _pack_run(args: argparse.Namespace) -> int:
    from mribundles.sharing.package import open_package, pack_bundle

    path = pack_bundle(args.bundle, args.out, args.sign)
    package = open_package(path)
    signed = f"signed by key {package.signature['key_id']}" if package.signature else "unsigned"
    print(f"{path}: {len(package.files)} files, {signed}")
    return 0


def _verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("zip", help="bundle zip from `pack`")
    parser.add_argument("--trusted-keys", metavar="DIR", default=None, help="folder of trusted *.pub keys")


def _verify_run(args: argparse.Namespace) -> int:
    from mribundles.sharing.package import open_package

    package = open_package(args.zip, args.trusted_keys)
    head = f"{package.path}: {package.name} {package.version}, manifest OK ({len(package.files)} files)"
    if package.signed_by is not None:
        print(f"{head}, signature OK by trusted key {package.signed_by.name}")
        return 0
    if args.trusted_keys is not None:  # keys given, zip unsigned
        print(f"error: {package.path}: bundle is unsigned; nothing to check against the trusted keys", file=sys.stderr)
        return 2
    state = "signed, but the signature was NOT checked (no --trusted-keys)" if package.signature else "UNSIGNED"
    print(f"{head}; {state}: treat it as an unsigned bundle")
    return 0


def _review_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="bundle folder or zip")


def _review_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mribundles.sharing.package import open_package
    from mribundles.sharing.review import review_bundle, summary

    # A folder is reviewed in place. Anything else is taken for a zip, checked (entries, sizes,
    # manifest) and reviewed from its entries, nothing unpacked: so a path that does not exist is
    # refused as not found, rather than as a folder without configs.
    source = args.bundle if Path(args.bundle).is_dir() else open_package(args.bundle)
    findings = review_bundle(source)
    for finding in findings:
        print(finding)
    print(summary(findings))
    return 0


def _install_like_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", required=True, help="folder to unpack <name>/ into")
    parser.add_argument("--trusted-keys", metavar="DIR", default=None, help="folder of trusted *.pub keys")
    parser.add_argument("--allow-code", action="store_true", help="accept config code without a trusted signature")


def _install_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("zip", help="bundle zip from `pack`")
    _install_like_arguments(parser)


def _install_run(args: argparse.Namespace) -> int:
    from mribundles.sharing.install import install_bundle

    print(f"installed {install_bundle(args.zip, args.to, args.trusted_keys, args.allow_code)}")
    return 0


def _publish_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("zip", help="bundle zip from `pack` (signed, for other sites to trust it)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow server (default: MLFLOW_TRACKING_URI)")


def _publish_run(args: argparse.Namespace) -> int:
    from mribundles.sharing.registry import publish_bundle

    info = publish_bundle(args.zip, args.tracking_uri)
    print(
        f"published {info['name']} {info['bundle_version']} as registered model version "
        f"{info['registry_version']} on {info['server']} ({info['signed_by_key']})"
    )
    return 0


def _fetch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="NAME[@VERSION]", help="bundle name, optionally @ its version")
    _install_like_arguments(parser)
    parser.add_argument("--tracking-uri", default=None, help="MLflow server (default: MLFLOW_TRACKING_URI)")


def _fetch_run(args: argparse.Namespace) -> int:
    from mribundles.sharing.registry import fetch_bundle

    folder = fetch_bundle(args.spec, args.to, args.trusted_keys, args.allow_code, args.tracking_uri)
    print(f"installed {folder}\nrun it: python -m monai.bundle run --config_file {folder}/configs/inference.json")
    return 0


register("keygen", "make an Ed25519 key pair for signing bundles", _keygen_arguments, _keygen_run)
register("pack", "pack a bundle into <name>-<version>.zip with a sha256 manifest, optionally signed", _pack_arguments, _pack_run)
register("verify", "check a bundle zip's manifest and, with --trusted-keys, its signature", _verify_arguments, _verify_run)
register("review", "list what a bundle runs outside the code policy ($ expressions, _target_s not on the allowed list, "
         "references to config outside the bundle, a non-standard logging.conf)", _review_arguments, _review_run)
register("install", "check a bundle zip and unpack it, refusing unsigned code outside the policy unless --allow-code",
         _install_arguments, _install_run)
register("publish", "register a bundle zip as a model version on the MLflow server", _publish_arguments, _publish_run)
register("fetch", "download a published bundle from the MLflow server, check it and install it", _fetch_arguments, _fetch_run)


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


def _refusal_message(exc: Exception) -> str | None:
    """The one line for an exception that refuses the user's input, or None for a fault of the code.

    A ValueError (InvalidInputError is one) or FileNotFoundError raised by a command, or a
    refusal (`mribundles.errors.find_refusal`) inside whatever wraps it, e.g. MONAI's
    RuntimeError around a config expression that failed on a corrupt file.
    """
    from mribundles.errors import find_refusal

    if isinstance(exc, (ValueError, FileNotFoundError)):
        return _one_line(exc)
    found = find_refusal(exc)
    return None if found is None else " ".join(found.split())


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default sys.argv[1:]), run the subcommand and return its exit code:
    2 and one line on stderr when the input is refused (`_refusal_message`)."""
    args = build_parser().parse_args(argv)
    try:
        return args._run(args)
    except Exception as exc:
        message = None if os.environ.get("MRIBUNDLES_TRACEBACK") == "1" else _refusal_message(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
