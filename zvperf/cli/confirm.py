"""``zvperf confirm RESULTS.json... -- PYTEST_ARGS``: the gate on one or more processes' results, then its failed and
inconclusive verdicts confirmed A/B: the same configurations re-run in processes of the base commit's checkout and
of this code, alternating, and judged head against base (exit 1 when the gate still fails).

With ``--zipvoice-base BASE --zipvoice-head HEAD`` the two sides are two ZipVoice checkouts under this zvperf and
environment, and every row of RESULTS that ran a ZipVoice checkout is judged head against base, whatever its
verdict against the stored baselines (a row without one too): an A/B of two commits of the user's ZipVoice."""

from __future__ import annotations

import argparse
from pathlib import Path

from zvperf.cli import compare
from zvperf.errors import ZvperfError
from zvperf.gate.judge import GateReport
from zvperf.gate.options import add_confirm_options
from zvperf.results.schema import ResultsFile, load_results
from zvperf.suite.confirm import confirm_report, zipvoice_sides, zvperf_sides


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
    p.add_argument("--zipvoice-base", type=Path, metavar="DIR", help="the base side's ZipVoice checkout")
    p.add_argument("--zipvoice-head", type=Path, metavar="DIR", help="the head side's ZipVoice checkout")
    p.add_argument(
        "pytest_args",
        nargs="*",
        metavar="-- PYTEST_ARGS",
        help="after --: the pytest options of the run being confirmed (matrix, device, rounds: as given to it)",
    )


def run(args: argparse.Namespace) -> int:
    if (args.zipvoice_base is None) != (args.zipvoice_head is None):
        raise ZvperfError("--zipvoice-base and --zipvoice-head name the two ZipVoice checkouts: give both, or neither.")
    report = compare.gate_report(args)
    if args.zipvoice_base is not None:
        sides = zipvoice_sides(args.zipvoice_base, args.zipvoice_head)
        ids = checkout_rows([load_results(path) for path in args.results], report)
        if not ids:
            named = ", ".join(map(str, args.results))
            raise ZvperfError(f"{named}: no row ran a ZipVoice checkout (run it with --zv-zipvoice=PATH).")
        report = confirm_report(report, sides, args.pytest_args, args.processes, ids)
    else:
        sides = zvperf_sides(args.base_checkout, head_python=args.head_python)
        report = confirm_report(report, sides, args.pytest_args, args.processes)
    return compare.print_report(args, report)


def checkout_rows(runs: list[ResultsFile], report: GateReport) -> list[str]:
    """The ids of the rows that ran a ZipVoice checkout and were measured."""
    ran = {r.id for run in runs for r in run.results if r.facts.zipvoice}
    return [v.id for v in report.verdicts if v.id in ran]
