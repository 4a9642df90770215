"""The gate's report as text (the terminal), Markdown (a job summary, a pull-request comment: ``zvperf.gate.markdown``,
from the JSON) or JSON (tools, and ``zvperf comment``)."""

from __future__ import annotations

import json
from typing import Any

from zvperf.gate import markdown
from zvperf.gate.judge import GateReport

FORMATS = ("text", "md", "json")


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
    if form == "md":  # from the JSON, as the pull request's comment is made
        return markdown.render([as_json(report)])
    if form == "json":
        return json.dumps(as_json(report), indent=2) + "\n"
    return "\n".join(report.lines()) + "\n"
