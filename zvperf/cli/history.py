"""``zvperf history add|show``: record runs in the per-hardware history; show each benchmark's trend, the commits
where its level changed, slow drift and the regressions standing since the last release."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

from zvperf.errors import ZvperfError
from zvperf.gate.judge import seconds
from zvperf.history import store, trends, writer
from zvperf.history.releases import FROM_START, Release, add_since_option, find_release
from zvperf.results.schema import load_results

SPARKS = "▁▂▃▄▅▆▇█"


def add_arguments(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="append each --benchmark-json file's run to the history of its hardware key")
    add.add_argument("results", type=Path, nargs="+", help="pytest-benchmark JSON written by zvperf runs")
    show = actions.add_parser(
        "show", help="per benchmark: the trend, the commits where the level changed, drift, standing regressions"
    )
    show.add_argument(
        "-k",
        dest="keyword",
        metavar="EXPR",
        help="only the benchmarks whose id matches, as pytest -k does: 'distill and solver', 'not e2e'",
    )
    show.add_argument("--hardware-key", help="one hardware key's history (default: every one in the folder)")
    add_since_option(show.add_argument)
    for action in (add, show):
        action.add_argument(
            "--history-dir",
            type=Path,
            metavar="DIR",
            default=store.DEFAULT_DIR,
            help="where the history files are (default: ./history, the repository's when run from its root)",
        )


def selector(expression: str | None) -> Callable[[str], bool] | None:
    """A benchmark-id filter from a pytest ``-k`` expression: each word matches when it is part of the id or of the
    test's name (``test_solver[zipvoice_distill-4step-torch-fp32]``), case aside, as in pytest."""
    if not expression:
        return None
    # pytest's own -k grammar (and, or, not, parentheses), so the expression means what it means to pytest.
    from _pytest.mark.expression import Expression

    try:
        compiled = Expression.compile(expression)
    except Exception as exc:  # SyntaxError from pytest 9, its ParseError before
        raise ZvperfError(f"-k {expression!r} is not a pytest -k expression ({exc}).") from None

    def select(benchmark: str) -> bool:
        config_id, _, kind = benchmark.rpartition(" ")
        names = (benchmark.lower(), f"test_{kind}[{config_id}]".lower())

        def matches(word: str, /, **_: str | int | bool | None) -> bool:
            return any(word.lower() in name for name in names)

        return compiled.evaluate(matches)

    return select


def sparkline(values: Sequence[float]) -> str:
    low, high = min(values), max(values)
    if high == low:
        return SPARKS[len(SPARKS) // 2] * len(values)
    return "".join(SPARKS[round((v - low) / (high - low) * (len(SPARKS) - 1))] for v in values)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _at(trend: trends.Trend, change: trends.Change) -> str:
    return f"{change.commit[:12]} ({trend.points[change.index].time[:10]})"


def _release_label(release: Release | None, since: str | None) -> str:
    if release is None:
        asked = since == FROM_START
        return (
            f"the start of the history ({'--since none' if asked else 'no release tag found; --since REF names one'})"
        )
    return f"{release.name} ({release.commit[:12]}, {release.time[:10]})"


def trend_lines(trend: trends.Trend) -> list[str]:
    points = trend.points
    first, last = points[0].median, points[-1].median
    lines = [
        f"{trend.benchmark}: {seconds(first)} -> {seconds(last)} ({last / first - 1:+.1%}) over "
        f"{_count(len(points), 'commit')}  {sparkline([p.median for p in points])}"
    ]
    for change in trend.changes:
        direction = "slower" if change.ratio > 0 else "faster"
        software = f"; also changed: {', '.join(change.software)}" if change.software else ""
        lines.append(
            f"  level changed at {_at(trend, change)}: {seconds(change.before)} -> {seconds(change.after)} "
            f"({change.ratio:+.1%}, {direction}){software}"
        )
    if not trend.changes:
        lines.append("  no change of level")
    drift = trend.drift
    if drift is None:
        lines.append(f"  drift: too few commits to tell (needs {trends.MIN_POINTS_FOR_DRIFT})")
    elif drift.significant:
        lines.append(
            f"  drifting: {drift.slope:+.2%} per commit (95% interval {drift.low:+.2%} to {drift.high:+.2%}), "
            f"{drift.total:+.1%} over {drift.commits} commits, Mann-Kendall p={drift.p_value:.2g}"
        )
    else:
        lines.append(f"  no drift ({drift.slope:+.2%} per commit, Mann-Kendall p={drift.p_value:.2g})")
    return lines


def regression_lines(found: list[trends.Trend], release: Release | None, since: str | None) -> list[str]:
    standing = trends.standing_regressions(found)
    header = f"Regressions standing since {_release_label(release, since)}"
    if not standing:
        return [f"{header}: none of {trends.REGRESSION_THRESHOLD:.0%} or more."]
    lines = [f"{header}, largest first:"]
    for trend, change in standing:
        lines.append(
            f"  {change.ratio:+.1%}  {trend.benchmark}: since {_at(trend, change)}, "
            f"{seconds(change.before)} -> {seconds(change.after)}"
        )
    return lines


def _show(args: argparse.Namespace) -> None:
    keys = [args.hardware_key] if args.hardware_key else store.hardware_keys(args.history_dir)
    if not keys:
        raise ZvperfError(f"{args.history_dir} holds no history; record runs with `zvperf history add RESULTS.json`.")
    release = find_release(args.since, Path.cwd())
    select = selector(args.keyword)
    for key in keys:
        path = store.history_path(args.history_dir, key)
        runs = store.read(path)
        if not runs:
            raise ZvperfError(f"there is no history file {path}.")
        found = trends.trends(runs, release, select)
        commits = len({run.commit for run in runs})
        print(f"{path}: {key}, {_count(len(runs), 'run')} of {_count(commits, 'commit')}")
        if not found:
            print(f"  no benchmark matches -k {args.keyword!r}")
            continue
        for trend in found:
            print("\n".join(trend_lines(trend)))
        print("\n".join(regression_lines(found, release, args.since)))


def run(args: argparse.Namespace) -> int:
    if args.action == "add":
        summaries = writer.append(args.history_dir, *(load_results(path) for path in args.results))
        print("\n".join(line for summary in summaries for line in summary.lines()))
    else:
        _show(args)
    return 0
