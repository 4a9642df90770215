"""``zvperf comment GATE.json...``: the gate's reports (``zvperf compare --format json``), one per runner, as one
Markdown text for a pull-request comment or a job summary: failing rows first with a link to the run, the rest
folded, every text from the results made inert, under GitHub's 65,536 characters. Standard library only, like
everything it imports: CI runs it from a checkout of the base commit without installing anything."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zvperf.gate.markdown import load_report, render


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("reports", type=Path, nargs="+", metavar="GATE.json", help="zvperf compare --format json reports")
    p.add_argument("--run-url", metavar="URL", help="the workflow run's https address, linked from the failing rows")


def run(args: argparse.Namespace) -> int:
    sys.stdout.write(render([load_report(path) for path in args.reports], args.run_url))
    return 0
