"""The ``zvperf`` command: one sub-command per module in this package."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from zvperf.cli import baseline, bench, calibrate, compare, conform, report, synth
from zvperf.errors import ZvperfError

COMMANDS = (baseline, bench, calibrate, compare, conform, report, synth)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zvperf", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return int(args.run(args) or 0)
    except ZvperfError as exc:
        if args.debug or os.environ.get("ZVPERF_DEBUG"):
            raise
        print(f"zvperf {args.command}: error: {exc}", file=sys.stderr)
        return 2
