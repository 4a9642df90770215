"""``zvperf compare RESULTS.json...``: the regression gate on saved pytest-benchmark JSON (exit 1 when it fails);
several files are separate processes of one commit, pooled into the judged side (the gate matrix runs three)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zvperf.gate import judge
from zvperf.gate.config import load_config
from zvperf.gate.formats import FORMATS, render
from zvperf.gate.options import add_gate_options, add_head_baselines_option
from zvperf.results.schema import load_results


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "results",
        type=Path,
        nargs="+",
        help="pytest-benchmark JSON written by zvperf runs: separate processes of one commit, their medians tested",
    )
    add_gate_options(p.add_argument)
    add_head_baselines_option(p.add_argument)
    p.add_argument("--format", choices=FORMATS, default="text", help="text (default), md (job summary) or json")


def gate_report(args: argparse.Namespace) -> judge.GateReport:
    runs = [load_results(path) for path in args.results]
    config = load_config(args.gate_config, args.baselines_dir)
    return judge.compare(runs, args.baselines_dir, config, args.require_baseline)


def print_report(args: argparse.Namespace, report: judge.GateReport) -> int:
    """Print the report in the asked format, naming the change's own ignored baseline edits; the exit status."""
    report.warnings[:0] = judge.ignored_head_changes(args.head_baselines_dir, args.baselines_dir)
    sys.stdout.write(render(report, args.format))
    return 1 if report.failed else 0


def run(args: argparse.Namespace) -> int:
    return print_report(args, gate_report(args))
