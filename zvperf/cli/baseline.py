"""``zvperf baseline update|show|revert``: store a run's results as baselines, list them, undo an update."""

from __future__ import annotations

import argparse
from pathlib import Path

from zvperf.errors import ZvperfError
from zvperf.gate import baselines
from zvperf.gate.config import load_config
from zvperf.gate.judge import seconds
from zvperf.gate.options import add_baseline_options, add_config_option
from zvperf.results.schema import load_results, short_commit
from zvperf.results.summary import format_table


def add_arguments(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="action", required=True)
    update = actions.add_parser(
        "update", help="merge --benchmark-json files into the baseline of their hardware (several runs: rounds pooled)"
    )
    update.add_argument(
        "results", type=Path, nargs="+", help="pytest-benchmark JSON written by zvperf runs of one commit and machine"
    )
    show = actions.add_parser("show", help="list the entries of one hardware key's baseline")
    revert = actions.add_parser("revert", help="put an entry's previous value back (revert again to undo)")
    revert.add_argument("id", help="the benchmark id, e.g. 'zipvoice_distill-4step-torch-fp32 solver'")
    for action in (update, show, revert):
        add_baseline_options(action.add_argument)
    # Whose alpha an entry must be able to reach: an update the gate could not judge against is refused.
    add_config_option(update.add_argument)
    for action in (show, revert):
        action.add_argument("--hardware-key", help="whose baseline (default: this machine's, as --zv-device auto)")


def _hardware_key(args: argparse.Namespace) -> str:
    if args.hardware_key:
        return args.hardware_key
    import torch  # only when the key is not given

    from zvperf.suite.machine import hardware_key

    key = hardware_key("cuda" if torch.cuda.is_available() else "cpu")  # the GPU's key where there is one
    if key not in baselines.hardware_keys(args.baselines_dir):
        present = ", ".join(baselines.hardware_keys(args.baselines_dir)) or "none"
        raise ZvperfError(
            f"{args.baselines_dir} has no baseline for this machine ({key}); pass --hardware-key (present: {present})."
        )
    return key


def _show(args: argparse.Namespace) -> None:
    key = _hardware_key(args)
    path = baselines.baseline_path(args.baselines_dir, key)
    baseline = baselines.read(path)
    if baseline is None:
        raise ZvperfError(f"there is no baseline file {path}.")
    machine = ", ".join(f"{k} {v}" for k, v in baseline.machine.items() if v is not None)
    print(f"{path}: {key} ({machine}), entries: {len(baseline.entries)}")
    rows = [
        {
            "benchmark": name,
            "median": seconds(entry.median),
            "IQR": f"{entry.spread:.1%}",
            "rounds": str(entry.rounds),
            "runs": str(entry.runs),
            "date": entry.date[:19],
            "commit": short_commit(entry.commit),
            "weights": entry.weights,
            "previous": seconds(entry.previous.median) if entry.previous else "-",
        }
        for name, entry in sorted(baseline.entries.items())
    ]
    for line in format_table(rows, left=("benchmark", "date", "commit", "weights")):
        print(line)


def run(args: argparse.Namespace) -> int:
    if args.action == "update":
        config = load_config(args.gate_config, args.baselines_dir)
        runs = [load_results(path) for path in args.results]
        summary = baselines.update(args.baselines_dir, *runs, config=config)
        print("\n".join(summary.lines()))
    elif args.action == "show":
        _show(args)
    else:
        key = _hardware_key(args)
        restored, replaced = baselines.revert(args.baselines_dir, key, args.id)
        origin = f"commit {restored.commit[:12]}, {restored.date[:19]}"
        print(
            f"{args.id} on {key}: median {seconds(restored.median)} ({origin}) restored in place of "
            f"{seconds(replaced.median)}; revert again to undo"
        )
    return 0
