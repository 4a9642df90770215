"""The report's history part: one hardware key's recorded runs, their trends per model and the standing regressions,
as template-ready values (the figures are drawn by ``zvperf.report.plots.history_plot``)."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path
from typing import Any

from zvperf.history import store, trends
from zvperf.history.releases import Release
from zvperf.report.tables import ms

# The kinds the trend plots draw: the guide's two columns.
PLOTTED_KINDS = ("solver", "e2e")


@dataclasses.dataclass
class History:
    """What the report shows of one hardware key's history file."""

    path: Path
    runs: list[store.Run]
    found: list[trends.Trend]  # every benchmark's trend
    release: Release | None

    @property
    def by_model(self) -> dict[str, list[trends.Trend]]:
        """The plotted trends of each model, in the order they were first measured."""
        models: dict[str, list[trends.Trend]] = defaultdict(list)
        for trend in self.found:
            if trend.kind in PLOTTED_KINDS:
                models[trend.model].append(trend)
        return dict(models)


def load(directory: Path, hardware_key: str, release: Release | None) -> History:
    path = store.history_path(directory, hardware_key)
    runs = store.read(path)
    return History(path, runs, trends.trends(runs, release), release)


def plot_names(prefix: str, history: History) -> dict[str, str]:
    """One figure per model: ``<prefix>-history-<model>.png``."""
    return {model: f"{prefix}-history-{model}.png" for model in history.by_model}


def _change(trend: trends.Trend, change: trends.Change) -> dict[str, Any]:
    return {
        "benchmark": trend.benchmark,
        "commit": change.commit[:12],
        "date": trend.points[change.index].time[:10],
        "before_ms": ms(change.before),
        "after_ms": ms(change.after),
        "change": f"{change.ratio:+.1%}",
    }


def context(history: History, names: dict[str, str]) -> dict[str, Any]:
    """The ``history`` part of a section's context."""
    release = history.release
    times = sorted(run.time[:10] for run in history.runs)
    return {
        "available": bool(history.runs),
        "file": history.path.name,
        "folder": str(history.path.parent),
        "runs": len(history.runs),
        "commits": len({run.commit for run in history.runs}),
        "first": times[0] if times else None,
        "last": times[-1] if times else None,
        "since": {"name": release.name, "commit": release.commit[:12], "date": release.time[:10]} if release else None,
        "threshold": f"{trends.REGRESSION_THRESHOLD:.0%}",
        "plots": [{"model": model, "file": names[model]} for model in history.by_model],
        "regressions": [_change(trend, change) for trend, change in trends.standing_regressions(history.found)],
        "drifting": [
            {
                "benchmark": trend.benchmark,
                "per_commit": f"{trend.drift.slope:+.2%}",
                "total": f"{trend.drift.total:+.1%}",
                "commits": trend.drift.commits,
            }
            for trend in history.found
            if trend.drift is not None and trend.drift.significant
        ],
    }
