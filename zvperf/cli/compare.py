"""``zvperf compare RESULTS.json``: the regression gate on a saved pytest-benchmark JSON (exit 1 on a slowdown)."""

from __future__ import annotations

import argparse
from pathlib import Path

from zvperf.gate import judge
from zvperf.gate.config import load_config
from zvperf.gate.options import add_gate_options
from zvperf.results.schema import load_results


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", type=Path, help="a pytest-benchmark JSON written by a zvperf run")
    add_gate_options(p.add_argument)


def run(args: argparse.Namespace) -> int:
    results = load_results(args.results)
    report = judge.compare(results, args.baselines_dir, load_config(args.gate_config, args.baselines_dir))
    print("\n".join(report.lines()))
    return 1 if report.failed else 0
