"""The collection's reconstruction targets, each checked on ``quality``'s results as one line
saying met or NOT met, with its numbers."""

from __future__ import annotations

from .settings import ADAPTED, CS, INVIVO_TARGETS, MAX_ADAPTATION_SECONDS, MIN_ADAPTATION_GAIN_DB, NAIVE, ORACLE_CS


def target_checks(results: list[tuple[dict, dict]]) -> list[str]:
    """The collection's targets, each as one line saying met or NOT met, with its numbers.

    `results` pairs each setting (with its `targets`, see `settings`) with its {method: metrics}."""
    lines = []
    for run, methods in results:
        naive_name = next(m for m in NAIVE if m in methods)
        naive, cs = methods[naive_name], methods[CS]
        needed = run["targets"]["min_gain_db"]
        for name, row in methods.items():
            if name in NAIVE or name.startswith(CS):
                continue
            where = f"{name}, {run['data']}, {run['sampling']}"
            gain = row["psnr"] - naive["psnr"]
            by = f" by at least {needed:g} dB" if needed else ""
            lines.append(f"{'met' if gain > needed else 'NOT met'}: beats {naive_name} in PSNR{by} ({where}: {gain:+.2f} dB)")
            if "psnr_head" in row:
                head_gain = row["psnr_head"] - naive["psnr_head"]
                lines.append(f"{'met' if head_gain > 0 else 'NOT met'}: beats {naive_name} in PSNR inside the head "
                             f"({where}: {head_gain:+.2f} dB)")
            if run["targets"]["beats_cs"]:
                lines.append(f"{'met' if row['psnr'] > cs['psnr'] else 'NOT met'}: beats {CS} in PSNR "
                             f"({where}: {row['psnr'] - cs['psnr']:+.2f} dB)")
            if name.endswith(ADAPTED):
                continue  # its seconds are the adaptation's: speed is the bundle's own row
            faster = row["seconds_per_slice"] < cs["seconds_per_slice"]
            lines.append(f"{'met' if faster else 'NOT met'}: faster than {CS} "
                         f"({where}: {row['seconds_per_slice']:.3f} s against {cs['seconds_per_slice']:.3f} s per slice)")
    return lines + real_data_checks(results)


def real_data_checks(results: list[tuple[dict, dict]]) -> list[str]:
    """The targets on the real in-vivo brain (inside the head) and of zero-shot adaptation."""
    lines = []
    for run, methods in results:
        if not run.get("real"):
            continue
        where = f"{run['data']}, {run['sampling']}"
        for name, row in methods.items():
            if not name.endswith(ADAPTED):
                continue
            before = methods[name.replace(ADAPTED, "")]
            gain = round(row["psnr_head"] - before["psnr_head"], 2)  # kept weights: exactly its bundle, not -0.00
            lines.append(f"{'met' if gain >= 0 else 'NOT met'}: adaptation does not lower its bundle inside the head "
                         f"({name}, {where}: {gain:+.2f} dB)")
            if run["data"] == "invivo" and run["sampling"] == "1D random 4x":
                lines.append(f"{'met' if gain >= MIN_ADAPTATION_GAIN_DB else 'NOT met'}: adaptation lifts its bundle by at "
                             f"least {MIN_ADAPTATION_GAIN_DB:g} dB inside the head ({name}, {where}: {gain:+.2f} dB)")
                fast = row["seconds_per_slice"] < MAX_ADAPTATION_SECONDS
                lines.append(f"{'met' if fast else 'NOT met'}: adaptation takes less than {MAX_ADAPTATION_SECONDS:g} s "
                             f"({name}, {where}: {row['seconds_per_slice']:.0f} s)")
        if run["data"] != "invivo" or run["sampling"] not in INVIVO_TARGETS:
            continue
        bundles = {m: r for m, r in methods.items() if m not in NAIVE and not m.startswith(CS)}
        best = max(bundles, key=lambda m: bundles[m]["psnr_head"])
        oracle = next(r for m, r in methods.items() if m.startswith(ORACLE_CS))
        over_naive, over_oracle = INVIVO_TARGETS[run["sampling"]]
        for needed, baseline, label in ((over_naive, methods["zero-filled"], "zero-filled"), (over_oracle, oracle, "oracle CS")):
            if needed is None:
                continue
            gain = bundles[best]["psnr_head"] - baseline["psnr_head"]
            lines.append(f"{'met' if gain >= needed else 'NOT met'}: the best bundle beats {label} by at least {needed:g} dB "
                         f"inside the head ({best}, {where}: {gain:+.2f} dB)")
    return lines
