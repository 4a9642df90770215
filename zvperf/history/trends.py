"""Trends in the history: per benchmark, its level over the commits, the commits where the level changed, slow
drift, and the regressions still standing since a release.

**The series.** One point per commit, in the order of the commits' dates (a run without one: its own date): the
median of that commit's runs' medians (one run per commit is usual; re-runs of a commit count once).

**Change points** come from asv's step detection (``asv.step_detect.detect_steps``, the method behind asv's
regression pages; Friedrich et al. 2008, "Complexity penalized M-estimation", with the penalty chosen by an
information criterion, Yao 1988). It fits a piecewise-constant level to the series, minimising
``gamma * (number of steps) + sum |median - level|``: an L1 fit, so one outlying run (a busy machine, a throttled
GPU) moves no level. Its assumptions, which hold for one median per commit of a fixed benchmark:

* between changes the level is constant and the points scatter around it with noise of one scale (Laplace-like,
  so outliers are tolerated); the noise may be correlated from one point to the next;
* a change is a jump at one commit, which then stays. A slow drift is *not* a step (see below), and asv's model has
  no drift: a drift of 0.2% per commit made a 10% step look like correlated noise in a third of the simulations
  below (131 of 200 still found);
* every point weighs the same. asv itself weighs points by their confidence intervals; here the IQR of a run's 5
  to 10 rounds is itself so noisy that weighing by it made the fit miss steps.

Simulated histories of 40 commits, each run 10 rounds with 2% noise per round, 200 of each (equal weights, then
1/IQR weights): a 10% step was found at its commit, and nowhere else, in 200 (196); no step was reported in 200 (200)
flat histories and in 200 (199) drifting by 0.3% per commit; a 10% step under a 0.1%-per-commit drift was found in
197 (159). ``tests/test_history.py`` runs 100 of the first three through this module.

**Drift** is the slow change the step fit leaves in its residuals: the Theil-Sen slope (``scipy.stats.theilslopes``,
a median of pairwise slopes, robust to outliers) of each point's relative distance from its level against the
commit order, and Kendall's tau against the order as the Mann-Kendall trend test (``scipy.stats.kendalltau``). A
benchmark is drifting when the test gives p < ``DRIFT_ALPHA``, the slope's 95% interval excludes zero, and the
slope adds up to at least ``DRIFT_MIN_TOTAL`` over the history; drift needs ``MIN_POINTS_FOR_DRIFT`` commits.

**Standing regressions** since a release: asv's ``detect_regressions`` on the levels from the release's commit on
(the last commit at or before the release when it was not measured itself): the upward steps whose level has not
come back down, relative jumps of at least ``REGRESSION_THRESHOLD`` (asv's default), largest first.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import math
import statistics
from collections.abc import Callable, Mapping, Sequence

from scipy import stats

from zvperf.history.releases import Release
from zvperf.history.store import Configuration, Measurement, Run

REGRESSION_THRESHOLD = 0.05
DRIFT_ALPHA = 0.01
DRIFT_MIN_TOTAL = 0.03
MIN_POINTS_FOR_DRIFT = 8


@dataclasses.dataclass(frozen=True)
class Point:
    """One commit's measurement of one benchmark."""

    commit: str
    time: str  # the commit's date (or the run's), ISO 8601
    median: float  # seconds: the median of the commit's runs' medians
    doubtful: bool  # some run of the commit was flagged noisy or throttled
    versions: Mapping[str, str | None]


@dataclasses.dataclass(frozen=True)
class Change:
    """A step of the level: from ``before`` to ``after`` at ``points[index]``, the first commit at the new level."""

    index: int
    commit: str
    before: float
    after: float
    software: tuple[str, ...] = ()  # versions that changed at the same commit, "torch 2.10.0 -> 2.11.0"

    @property
    def ratio(self) -> float:
        """The relative change: +0.10 is 10% slower."""
        return self.after / self.before - 1


@dataclasses.dataclass(frozen=True)
class Drift:
    slope: float  # relative change per commit (0.003: 0.3% of the level per commit)
    low: float  # the slope's 95% interval
    high: float
    p_value: float  # Mann-Kendall
    commits: int

    @property
    def total(self) -> float:
        """The slope over the whole history."""
        return self.slope * (self.commits - 1)

    @property
    def significant(self) -> bool:
        excludes_zero = self.low > 0 or self.high < 0
        return self.p_value < DRIFT_ALPHA and excludes_zero and abs(self.total) >= DRIFT_MIN_TOTAL


@dataclasses.dataclass(frozen=True)
class Trend:
    benchmark: str  # the id, "zipvoice_distill-4step-torch-fp32 solver"
    kind: str
    configuration: Configuration  # as the latest run described it
    points: tuple[Point, ...]
    levels: tuple[tuple[int, int, float], ...]  # (first point, end (exclusive), level in seconds)
    changes: tuple[Change, ...]
    drift: Drift | None  # None: too few commits to tell
    since: int  # the point the standing regressions are counted from (the release's commit, or 0)
    standing: tuple[Change, ...]  # largest first

    @property
    def model(self) -> str:
        return self.configuration.model


def moment(stamp: str) -> dt.datetime:
    """An ISO 8601 time, comparable with any other (one without a zone is taken as UTC)."""
    try:
        parsed = dt.datetime.fromisoformat(stamp)
    except ValueError:
        return dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def _by_commit(runs: Sequence[Run]) -> list[list[Run]]:
    """The runs grouped by commit, the commits in the order of their dates (then of the runs')."""
    ordered = sorted(runs, key=lambda run: (moment(run.time), moment(run.date)))
    groups: dict[str, list[Run]] = {}
    for run in ordered:
        groups.setdefault(run.commit, []).append(run)
    return list(groups.values())


def _software_changes(before: Point, after: Point) -> tuple[str, ...]:
    """The versions that differ between two commits' runs: a step there may be theirs, not the code's."""
    old, new = before.versions, after.versions
    return tuple(
        f"{key} {old.get(key) or '-'} -> {new.get(key) or '-'}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    )


def _drift(points: Sequence[Point], levels: Sequence[tuple[int, int, float]]) -> Drift | None:
    if len(points) < MIN_POINTS_FOR_DRIFT:
        return None
    residuals = [
        point.median / level - 1 for first, end, level in levels for point in points[first:end]
    ]  # what the steps leave: each point's relative distance from its level
    order = list(range(len(residuals)))
    slope, _, low, high = stats.theilslopes(residuals, order, alpha=0.95)
    p_value = stats.kendalltau(order, residuals).pvalue
    return Drift(float(slope), float(low), float(high), 1.0 if math.isnan(p_value) else float(p_value), len(points))


def _standing(steps: list[tuple], since: int, points: Sequence[Point]) -> tuple[Change, ...]:
    """asv's regressions among the levels from ``since`` on: upward steps not undone since."""
    clipped = [(max(left, since), right, *rest) for left, right, *rest in steps if right > since]
    from asv.step_detect import detect_regressions  # imported here, as in trend()

    _, _, positions = detect_regressions(clipped, threshold=REGRESSION_THRESHOLD)
    found = [Change(after, points[after].commit, before, best) for _, after, before, best in positions or []]
    return tuple(sorted(found, key=lambda change: change.ratio, reverse=True))


def _release_index(points: Sequence[Point], release: Release | None) -> int:
    """The release's commit, else the last commit dated at or before it, else the first point."""
    if release is None:
        return 0
    same = [i for i, point in enumerate(points) if point.commit.removesuffix("+dirty") == release.commit]
    if same:
        return same[-1]
    before = [i for i, point in enumerate(points) if moment(point.time) <= moment(release.time)]
    return before[-1] if before else 0


def _measured(run: Run, benchmark: str) -> tuple[Configuration, Measurement] | None:
    config_id, _, kind = benchmark.rpartition(" ")
    configuration = run.configurations.get(config_id)
    if configuration is None or kind not in configuration.measurements:
        return None
    return configuration, configuration.measurements[kind]


def _point(runs: Sequence[Run], benchmark: str) -> tuple[Point, Configuration] | None:
    """One commit's point: the median of its runs' medians (None when none of them measured the benchmark)."""
    found = [(run, *pair) for run in runs if (pair := _measured(run, benchmark))]
    if not found:
        return None
    last, configuration, _ = found[-1]
    point = Point(
        commit=last.commit,
        time=last.time,
        median=statistics.median(measurement.median for _, _, measurement in found),
        doubtful=any(measurement.doubtful for _, _, measurement in found),
        versions=last.versions,
    )
    return point, configuration


def trend(benchmark: str, commits: Sequence[Sequence[Run]], release: Release | None = None) -> Trend:
    """The trend of one benchmark over the commits (each the list of its runs) that measured it."""
    found = [pair for runs in commits if (pair := _point(runs, benchmark))]
    if not found:
        raise ValueError(f"no run measured {benchmark!r}")
    points = [point for point, _ in found]
    # asv is imported where it is used, so that report and gate, which import this module, run where asv is
    # not installed (the GPU check's offline machine has no asv) as long as no history is asked for.
    from asv.step_detect import detect_steps

    steps = detect_steps([point.median for point in points])
    levels = tuple((left, right, level) for left, right, level, *_ in steps)
    changes = tuple(
        Change(
            left,
            points[left].commit,
            before,
            after,
            _software_changes(points[left - 1], points[left]),
        )
        for (_, _, before), (left, _, after) in itertools.pairwise(levels)
    )
    since = _release_index(points, release)
    return Trend(
        benchmark=benchmark,
        kind=benchmark.rpartition(" ")[2],
        configuration=found[-1][1],
        points=tuple(points),
        levels=levels,
        changes=changes,
        drift=_drift(points, levels),
        since=since,
        standing=_standing(steps, since, points),
    )


def trends(
    runs: Sequence[Run], release: Release | None = None, select: Callable[[str], bool] | None = None
) -> list[Trend]:
    """A trend per benchmark in the runs (those ``select`` accepts), in the order they were first measured."""
    commits = _by_commit(runs)
    names = dict.fromkeys(name for group in commits for run in group for name, _, _ in run.benchmarks())
    return [trend(name, commits, release) for name in names if select is None or select(name)]


def standing_regressions(found: Sequence[Trend]) -> list[tuple[Trend, Change]]:
    """Every standing regression of the trends, the largest first."""
    pairs = [(each, change) for each in found for change in each.standing]
    return sorted(pairs, key=lambda pair: pair[1].ratio, reverse=True)
