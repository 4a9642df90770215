"""``zvperf report``: the optimization guide's tables, recommendations and plots, rendered from results JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

from zvperf.history.releases import add_since_option
from zvperf.report import LANGS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Render one or more --benchmark-json files from zvperf's suite into markdown, one section per "
        "hardware key, with PNG plots written next to the markdown."
    )
    p.add_argument("results", nargs="+", type=Path, metavar="RESULTS.json", help="pytest-benchmark JSON from zvperf")
    p.add_argument("--lang", default="ja", choices=LANGS, help="language of the bundled template (default: ja)")
    p.add_argument("--template", type=Path, metavar="FILE", help="a Jinja2 template to use instead of the bundled one")
    p.add_argument(
        "--history",
        type=Path,
        metavar="DIR",
        help="add a section per hardware key with its trend plots and standing regressions from DIR (e.g. history/)",
    )
    add_since_option(p.add_argument)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("-o", "--output", type=Path, metavar="FILE", help="write the whole report to FILE")
    target.add_argument(
        "--update",
        type=Path,
        metavar="FILE",
        help="rewrite only the <!-- zvperf:begin NAME --> ... <!-- zvperf:end NAME --> blocks of FILE",
    )


def run(args: argparse.Namespace) -> int:
    # Imported here so that matplotlib and Jinja2 load only for this command.
    from zvperf.report.render import Request, update_report, write_report

    request = Request(args.results, args.lang, args.template, args.history, args.since)
    if args.update is not None:
        update_report(request, args.update)
        print(f"updated {args.update}")
    else:
        write_report(request, args.output)
        print(f"wrote {args.output}")
    return 0
