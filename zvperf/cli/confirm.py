"""``zvperf confirm RESULTS.json -- PYTEST_ARGS``: the gate, then its failed and inconclusive verdicts confirmed
A/B: the same configurations re-run in processes of the base commit's checkout and of this code, alternating,
and judged head against base (exit 1 when the gate still fails)."""

from __future__ import annotations

import argparse

from zvperf.cli import compare
from zvperf.gate.options import add_confirm_options
from zvperf.suite.confirm import confirm_report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = __doc__
    compare.add_arguments(p)
    add_confirm_options(p.add_argument)
    p.add_argument(
        "--head-python",
        metavar="PYTHON",
        help="the interpreter of the head's own environment: its processes run the zvperf installed there, and this "
        "zvperf only judges (CI: the base commit's, installed apart); default: this interpreter with this code",
    )
    p.add_argument(
        "pytest_args",
        nargs="*",
        metavar="-- PYTEST_ARGS",
        help="after --: the pytest options of the run being confirmed (matrix, device, rounds: as given to it)",
    )


def run(args: argparse.Namespace) -> int:
    report = confirm_report(
        compare.gate_report(args), args.base_checkout, args.pytest_args, args.processes, head_python=args.head_python
    )
    return compare.print_report(args, report)
