"""The report's figures: time against step count, and RTF per configuration (PNG, matplotlib's Agg backend).

Labels are in English for both languages: matplotlib's bundled fonts have no Japanese glyphs.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402

from zvperf.report.tables import Row, Section, fmt_rtf  # noqa: E402

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
