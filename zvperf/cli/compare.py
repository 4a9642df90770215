"""``zvperf compare RESULTS.json``: the regression gate on a saved pytest-benchmark JSON (exit 1 on a slowdown)."""

from __future__ import annotations

import argparse
from pathlib import Path

from zvperf.bench import baselines, gate
from zvperf.bench.gate_config import load_config
from zvperf.bench.results import load_results


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="judge a --benchmark-json file against the baselines of its hardware (exit 1 on a significant slowdown)",
    )
    p.add_argument("results", type=Path, help="a pytest-benchmark JSON written by a zvperf run")
    p.add_argument("--baselines-dir", type=Path, default=baselines.DEFAULT_DIR, help="default: ./baselines")
    p.add_argument("--config", type=Path, help="gate settings (default: BASELINES_DIR/gate.toml when present)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    results = load_results(args.results)
    report = gate.compare(results, args.baselines_dir, load_config(args.config, args.baselines_dir))
    print("\n".join(report.lines()))
    return 1 if report.failed else 0
