"""The gate's report as text (the terminal), Markdown (a job summary, a pull-request comment) or JSON (tools)."""

from __future__ import annotations

import json
from typing import Any

from zvperf.gate.judge import GateReport, Verdict, p_number, seconds

FORMATS = ("text", "md", "json")
TABLE_COLUMNS = (
    "benchmark", "median", "reference", "change", "p (method)", "p adjusted", "n", "verdict",
    "GPU clock, temperature, throttling",
)  # fmt: skip
FIGURE_COLUMNS = ("benchmark", "figure", "value", "reference", "change", "threshold", "runs", "verdict")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _status(label: str) -> str:
    return f"**{label}**" if label.isupper() else label


def _figure_rows(verdict: Verdict) -> list[list[str]]:
    """One row per figure judged (peak memory, energy per audio second)."""
    rows = []
    for check in verdict.metrics:
        text = check.metric.text
        rows.append(
            [
                f"`{verdict.id}`",
                check.metric.name,
                text(check.value) if check.value is not None else "-",
                f"{text(check.reference)} ({verdict.reference})" if check.reference is not None else "-",
                f"{check.change:+.1%}" if check.change is not None else "-",
                f"{check.threshold:.0%}",
                f"{check.runs[0]}/{check.runs[1]}",
                _status(check.label) + (f": {check.reason}" if check.reason else ""),
            ]
        )
    return rows


def _row(verdict: Verdict) -> list[str]:
    status = _status(verdict.label)
    if verdict.confirmed:
        status += f" (confirmed: {verdict.confirmed})"
    if verdict.reason:
        status += f": {verdict.reason}"
    n = f"{verdict.rounds[0]}/{verdict.rounds[1]}" if verdict.rounds else "-"
    return [
        f"`{verdict.id}`",
        seconds(verdict.median) if verdict.median is not None else "-",
        f"{seconds(verdict.baseline_median)} ({verdict.reference})" if verdict.baseline_median is not None else "-",
        f"{verdict.change:+.1%}" if verdict.change is not None else "-",
        f"{p_number(verdict.p)} ({verdict.method})" if verdict.p is not None else "-",
        p_number(verdict.p_adjusted) if verdict.p_adjusted is not None else "-",
        n,
        status,
        verdict.gpu,
    ]


def _table(columns: tuple[str, ...] | list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def markdown(report: GateReport) -> str:
    """A heading with the outcome, the verdict table, then the configurations that were not measured."""
    outcome = "FAILED" if report.failed else "passed"
    lines = [f"### zvperf gate on `{report.hardware_key}`: {outcome}", "", report.summary(), ""]
    if report.confirmation:
        lines += [f"Confirmation: {report.confirmation}", ""]
    lines += [f"> warning: {_cell(w)}" for w in report.warnings] + ([""] if report.warnings else [])
    measured = [v for v in report.verdicts if v.median is not None]
    if measured:
        lines += [*_table(TABLE_COLUMNS, [_row(v) for v in measured]), ""]
    figures = [row for v in measured for row in _figure_rows(v)]
    if figures:
        lines += ["#### Peak memory and energy per audio second", "", *_table(FIGURE_COLUMNS, figures), ""]
    others = [v for v in report.verdicts if v.median is None]
    if others:
        lines += ["#### Missing, errored and skipped configurations", ""]
        lines += [*_table(["benchmark", "status", "reason"], [[f"`{v.id}`", v.label, v.reason] for v in others]), ""]
    lines += [f"<sub>{_cell(report.header())}</sub>", ""]
    return "\n".join(lines)


def as_json(report: GateReport) -> dict[str, Any]:
    return {
        "hardware_key": report.hardware_key,
        "baselines": str(report.path),
        "failed": report.failed,
        "judged": report.judged,
        "summary": report.summary(),
        "settings": report.header(),
        "confirmation": report.confirmation,
        "warnings": report.warnings,
        "problems": report.unmet,
        "verdicts": [v.to_json() for v in report.verdicts],
    }


def render(report: GateReport, form: str) -> str:
    if form == "md":
        return markdown(report)
    if form == "json":
        return json.dumps(as_json(report), indent=2) + "\n"
    return "\n".join(report.lines()) + "\n"
