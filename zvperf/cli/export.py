"""``zvperf export``: a results file as Bencher Metric Format or github-action-benchmark customSmallerIsBetter JSON."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zvperf.files import write_atomic
from zvperf.results.export import FORMATS, export
from zvperf.results.schema import load_results


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", type=Path, metavar="RESULTS.json", help="a pytest-benchmark JSON written by a zvperf run")
    p.add_argument(
        "--format",
        required=True,
        choices=FORMATS,
        help="bencher: Bencher Metric Format (bencher run --adapter json); github-action-benchmark: the action's "
        "customSmallerIsBetter tool",
    )
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="write to FILE (default: standard output)")


def run(args: argparse.Namespace) -> int:
    text = export(load_results(args.results), args.format)
    if args.output is None:
        sys.stdout.write(text)
    else:
        write_atomic(args.output, text)
        print(f"wrote {args.output}")
    return 0
