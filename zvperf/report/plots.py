"""The report's figures: time against step count, RTF per configuration, and the history's trends per model (PNG,
matplotlib's Agg backend).

Labels are in English for both languages: matplotlib's bundled fonts have no Japanese glyphs.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from zvperf.history.releases import Release  # noqa: E402
from zvperf.history.trends import Trend, moment  # noqa: E402
from zvperf.report.tables import Row, Section, fmt_rtf  # noqa: E402
from zvperf.report.trends import PLOTTED_KINDS, History  # noqa: E402

# Without the Software entry (matplotlib's version) the PNG bytes depend only on the data.
_METADATA = {"Software": None}


def _label(line: tuple[str, str, int | None]) -> str:
    model, variant, frames = line
    return f"{model} {variant}" + (f" {frames}f" if frames else "")


def steps_plot(section: Section, path: Path) -> None:
    """Solver and end-to-end median ms against Euler steps: one line per model, backend-precision and length."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
    for ax, kind, title in ((axes[0], "solver", "Solver (ODE loop)"), (axes[1], "e2e", "End to end")):
        lines: dict[tuple[str, str, int | None], list[Row]] = defaultdict(list)
        for row in section.rows:
            if getattr(row, kind) is not None:
                lines[row.line].append(row)
        for line, rows in lines.items():
            rows.sort(key=lambda row: row.num_step)
            times = [getattr(row, kind).median * 1e3 for row in rows]
            ax.plot([row.num_step for row in rows], times, marker="o", label=_label(line))
        ax.set_title(title)
        ax.set_xlabel("Euler steps")
        ax.set_ylabel("median time (ms)")
        ax.grid(True, alpha=0.3)
        if lines:
            ax.legend(fontsize="small")
    fig.suptitle(section.key)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata=_METADATA)
    plt.close(fig)


def rtf_plot(section: Section, path: Path) -> None:
    """RTF per configuration as labelled horizontal bars; the real-time line at 1 when it is near the bars."""
    rows = section.rows
    rtfs = [row.rtf for row in rows]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    positions = range(len(rows))
    bars = ax.barh(positions, rtfs, color="tab:blue")
    ax.bar_label(bars, labels=[fmt_rtf(rtf) for rtf in rtfs], padding=3, fontsize="small")
    ax.set_yticks(positions, [row.config_id for row in rows], fontsize="small")
    ax.invert_yaxis()  # table order, top to bottom
    # A line at 1 far beyond the bars would squash them to nothing; then the title says they are all below it.
    if max(rtfs) > 0.5:
        ax.axvline(1.0, color="tab:red", linestyle="--", label="real time (RTF 1)")
        ax.legend(fontsize="small", loc="lower right")
        ax.set_xlim(0, max(1.0, max(rtfs)) * 1.2)
        ax.set_title(section.key)
    else:
        ax.set_xlim(0, max(rtfs) * 1.25)
        ax.set_title(f"{section.key} (all well below real time, RTF 1)")
    ax.set_xlabel("RTF (seconds of compute per second of audio)")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata=_METADATA)
    plt.close(fig)


def plot_names(prefix: str) -> dict[str, str]:
    """The figures' file names, known before they are drawn so the markdown can be rendered first."""
    return {"steps": f"{prefix}-steps.png", "rtf": f"{prefix}-rtf.png"}


def write_plots(section: Section, directory: Path, names: dict[str, str]) -> None:
    steps_plot(section, directory / names["steps"])
    rtf_plot(section, directory / names["rtf"])


TITLES = {"solver": "Solver (ODE loop)", "e2e": "End to end"}
MAX_COMMIT_LABELS = 12


def _commit_axis(found: list[Trend]) -> dict[str, int]:
    """Every commit the trends measured, in order: its position on the x axis."""
    x_of: dict[str, int] = {}
    points = sorted((point for trend in found for point in trend.points), key=lambda point: moment(point.time))
    for point in points:
        x_of.setdefault(point.commit, len(x_of))
    return x_of


def history_figure(model: str, found: list[Trend], release: Release | None) -> Figure:
    """Median solver and end-to-end time over the commits: a line per configuration (steps, backend-precision),
    each commit's point filled, or hollow where a run was flagged noisy or throttled; a cross where the level
    changed, its fitted levels dashed, and the ``release`` the trends counted regressions from (their ``since``) as
    a vertical line.

    Each artist has a gid the tests find it by: ``<variant>`` (the line), ``<variant> hollow``,
    ``<variant> changes``, ``release``."""
    x_of = _commit_axis(found)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, kind in zip(axes, PLOTTED_KINDS, strict=True):
        for index, trend in enumerate(t for t in found if t.kind == kind):
            color = f"C{index % 10}"
            variant = trend.configuration.variant
            xs = [x_of[point.commit] for point in trend.points]
            ys = [point.median * 1e3 for point in trend.points]
            ax.plot(xs, ys, color=color, marker="o", markersize=4, label=variant, gid=variant)
            hollow = [i for i, point in enumerate(trend.points) if point.doubtful]
            ax.plot(
                [xs[i] for i in hollow],
                [ys[i] for i in hollow],
                linestyle="none",
                marker="o",
                markersize=7,
                markerfacecolor="white",
                markeredgecolor=color,
                gid=f"{variant} hollow",
            )
            for first, end, level in trend.levels:
                ax.plot([xs[first], xs[end - 1]], [level * 1e3] * 2, color=color, linestyle="--", linewidth=0.8)
            ax.plot(
                [xs[change.index] for change in trend.changes],
                [ys[change.index] for change in trend.changes],
                linestyle="none",
                marker="X",
                markersize=10,
                color="tab:red",
                label="level changed" if trend.changes else None,
                gid=f"{variant} changes",
            )
        if release is not None and found:
            since = next(t.since for t in found)
            commit = found[0].points[since].commit
            ax.axvline(x_of[commit], color="grey", linestyle=":", label=f"release {release.name}", gid="release")
        step = max(1, -(-len(x_of) // MAX_COMMIT_LABELS))
        commits = list(x_of)[::step]
        ax.set_xticks([x_of[c] for c in commits], [c[:7] for c in commits], rotation=45, fontsize="x-small")
        ax.set_title(TITLES[kind])
        ax.set_xlabel("commit (oldest to newest)")
        ax.set_ylabel("median time (ms)")
        ax.grid(True, alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            unique = dict(zip(labels, handles, strict=True))  # one "level changed" entry, not one per line
            ax.legend(unique.values(), unique.keys(), fontsize="small")
    fig.suptitle(f"{model}: median time per commit")
    fig.tight_layout()
    return fig


def history_plot(model: str, found: list[Trend], release: Release | None, path: Path) -> None:
    fig = history_figure(model, found, release)
    fig.savefig(path, dpi=100, metadata=_METADATA)
    plt.close(fig)


def write_history_plots(history: History, directory: Path, names: dict[str, str]) -> None:
    for model, found in history.by_model.items():
        history_plot(model, found, history.release, directory / names[model])
