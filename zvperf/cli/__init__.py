"""The ``zvperf`` command: one sub-command per module in this package, imported only when it runs (so that
``zvperf report`` or ``zvperf compare`` never load torch, and ``zvperf --help`` answers at once)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from zvperf.errors import ZvperfError

# name -> one line of help; the module zvperf.cli.<name> (hyphens as underscores) has add_arguments(parser) and
# run(args).
COMMANDS = {
    "baseline": "update, show or revert the per-hardware baselines the gate compares with",
    "bench": "run the benchmark matrix split over several GPUs (one process each) and merge the JSON",
    "calibrate": "measure the gate's false-alarm and detection rates on this machine with injected slowdowns",
    "comment": "the gate's JSON reports of one or more runners as one Markdown comment: failing rows first, every "
    "text from the results made inert, under GitHub's 65,536 characters",
    "compare": "judge a --benchmark-json file against the baselines of its hardware (exit 1 on a significant slowdown)",
    "confirm": "judge a --benchmark-json file, then re-run its failed and inconclusive configurations A/B against "
    "the base commit's checkout in alternating processes and judge head against base",
    "conform": "run conformance case folders and compare with the reference outputs",
    "export": "write a --benchmark-json file as Bencher Metric Format or github-action-benchmark JSON",
    "gpu-check": "try every GPU path once in a few minutes: versions, conformance, a short benchmark, verdicts, report",
    "history": "record runs in the per-hardware history; show trends, change points, drift and standing regressions",
    "profile": "profile one solve of a configuration: the top operators with their share of the time and FLOP rate",
    "report": "render benchmark results into a markdown guide with plots (ja or en)",
    "synth": "synthesise speech from text and a prompt, with stage timings",
    "weights": "write synthetic full-size weights as a model folder in the official layout (for a ZipVoice checkout)",
}


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser, with the arguments of the command named in ``argv`` (the first word not an option)."""
    parser = argparse.ArgumentParser(
        prog="zvperf",
        description="ZipVoice inference: synthesis, conformance, benchmarks, the regression gate, reports.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((word for word in argv if not word.startswith("-")), None)
    for name, help in COMMANDS.items():
        command = sub.add_parser(name, help=help, description=help)
        if name == chosen:
            module = importlib.import_module(f"{__name__}.{name.replace('-', '_')}")
            module.add_arguments(command)
            command.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after `--` goes to pytest (bench, calibrate, confirm): split here, as argparse cannot put a
    # list after a positional argument (confirm's RESULTS) and still read the options between them.
    ours, pytest_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, None)
    try:
        parser = build_parser(ours)
        args = parser.parse_args(ours)
        if pytest_args is not None:
            if not hasattr(args, "pytest_args"):
                parser.error(f"zvperf {args.command} takes no pytest options after --")
            args.pytest_args = pytest_args
    except SystemExit as exc:  # a usage error (2) or --help (0), already printed by argparse
        return int(exc.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return int(args.run(args) or 0)
    except ZvperfError as exc:
        if args.debug or os.environ.get("ZVPERF_DEBUG"):
            raise
        print(f"zvperf {args.command}: error: {exc}", file=sys.stderr)
        return 2
