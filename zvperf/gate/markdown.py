"""The gate's verdicts as GitHub Markdown, for a job summary or the pull request's comment (one or more runners'
reports in one), made from the reports' JSON (``zvperf compare --format json``, ``zvperf.gate.formats``).

Every text in a report came from a benchmark run (ids, skip and error messages, GPU telemetry, software versions,
and in CI the run is the pull request's own code), so none may act as Markdown or HTML or call on anyone:

* an id goes in a code span, whose fence is longer than any run of backticks inside, where nothing is Markdown;
* any other text has every ASCII punctuation character backslash-escaped (CommonMark allows it for each, and no
  other ASCII character is syntax once line breaks are spaces and leading spaces are gone), control and format
  characters removed, and a zero-width space after each ``@``, ``#`` and ``:`` and after ``www``: GitHub links
  mentions, references, emoji and URLs in the rendered text, where no escape reaches;
* inside HTML (a ``<details>`` summary) a text is HTML-escaped instead, with the same zero-width spaces.

GitHub refuses a comment over 65,536 characters. Each report's failing rows come first, each with a link to the
workflow run, and the others are folded in ``<details>``; where the whole would pass the limit, rows are cut from
the end, folded rows before failing ones, and a note at the top says how many of each. One text is cut at
``MAX_TEXT`` characters.

Standard library only: the comment job runs this from a checkout of the base commit and installs nothing.
"""

from __future__ import annotations

import dataclasses
import html
import json
import re
import unicodedata
import urllib.parse
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from zvperf.errors import ZvperfError
from zvperf.gate.numbers import p_number, seconds

COMMENT_LIMIT = 65_536  # characters in a GitHub comment
RESERVED = 1_000  # of those: the note of what was cut, and the hidden header the sticky-comment action adds
MAX_TEXT = 1_000  # characters of one text of a report
TABLE_COLUMNS = (
    "benchmark", "median", "reference", "change", "p (method)", "p adjusted", "processes (rounds)", "verdict",
    "GPU clock, temperature, throttling",
)  # fmt: skip
FIGURE_COLUMNS = ("benchmark", "figure", "value", "reference", "change", "threshold", "runs", "verdict")
FIGURES_HEADING = "#### Peak memory and energy per audio second"
ZERO_WIDTH_SPACE = "\u200b"
_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation character
# GitHub's links in rendered text: @mentions, #references, :emoji: and scheme://, www. addresses.
_LINKED = re.compile(r"(@|#|:|(?i:www))")
_ESCAPED_LINKED = re.compile(r"(\\[@#:]|(?i:www))")


def _clean(text: str) -> str:
    """One line, without control or format characters (a right-to-left override, say), at most MAX_TEXT long."""
    text = " ".join("".join(c for c in text if not unicodedata.category(c).startswith("C") or c.isspace()).split())
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def inert(text: str) -> str:
    """A text of a report, made plain Markdown text."""
    escaped = _PUNCTUATION.sub(r"\\\1", _clean(text))
    return _ESCAPED_LINKED.sub(rf"\1{ZERO_WIDTH_SPACE}", escaped)


def inert_html(text: str) -> str:
    """A text of a report, made plain text inside HTML."""
    return html.escape(_LINKED.sub(rf"\1{ZERO_WIDTH_SPACE}", _clean(text)))


def code(text: str, in_table: bool = True) -> str:
    """A text of a report as a code span (in a table, its pipes escaped: GFM splits cells on them first)."""
    text = _clean(text)
    if not text:
        return "-"
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text[0] == "`" or text[-1] == "`" else ""
    if in_table:
        text = text.replace("|", r"\|")
    return f"{fence}{pad}{text}{pad}{fence}"


def run_link(url: str) -> str:
    """A workflow run's address as a link destination; an address that is not https is refused."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or not parts.netloc:
        raise ZvperfError(f"--run-url {url!r} is not an https address.")
    return urllib.parse.quote(url, safe=":/?=&%#")


# --- the report's JSON, checked: any file may have been written by anyone ------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_pair(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(x, int) and not isinstance(x, bool) for x in value)
    )


def _is_texts(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(x, str) for x in value)


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _maybe(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


REPORT_FIELDS: dict[str, Callable[[Any], bool]] = {
    "hardware_key": _text, "summary": _text, "settings": _text, "confirmation": _text, "warnings": _is_texts,
    "failed": lambda value: isinstance(value, bool), "verdicts": lambda value: isinstance(value, list),
}  # fmt: skip
VERDICT_FIELDS: dict[str, Callable[[Any], bool]] = {
    "id": _text, "status": _text, "label": _text, "reason": _text, "gpu": _text, "reference": _text,
    "confirmed": _text, "warnings": _is_texts, "failing": lambda value: isinstance(value, bool),
    "median": _maybe(_is_number), "baseline_median": _maybe(_is_number), "change": _maybe(_is_number),
    "p": _maybe(_is_number), "p_adjusted": _maybe(_is_number), "method": _maybe(_text), "rounds": _maybe(_is_pair),
    "metrics": lambda value: isinstance(value, list),
}  # fmt: skip
FIGURE_FIELDS: dict[str, Callable[[Any], bool]] = {
    "metric": _text, "unit": _text, "status": _text, "label": _text, "reason": _text,
    "decimals": lambda value: isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 9,
    "threshold": _is_number, "value": _maybe(_is_number), "reference": _maybe(_is_number),
    "change": _maybe(_is_number), "runs": _is_pair,
}  # fmt: skip


def _check(value: Any, fields: dict[str, Callable[[Any], bool]], source: str, where: str) -> None:
    if not isinstance(value, dict):
        raise ZvperfError(f"{source}: {where} is not a JSON object; is it a zvperf compare --format json report?")
    for name, valid in fields.items():
        if name not in value or not valid(value[name]):
            raise ZvperfError(f"{source}: {where} has no valid {name!r}; is it a zvperf compare --format json report?")


def check_report(document: Any, source: str) -> dict[str, Any]:
    """The report, once every field the Markdown uses has its type; else an error naming ``source``."""
    _check(document, REPORT_FIELDS, source, "the report")
    for index, verdict in enumerate(document["verdicts"]):
        _check(verdict, VERDICT_FIELDS, source, f"verdict {index}")
        for figure in verdict["metrics"]:
            _check(figure, FIGURE_FIELDS, source, f"a figure of verdict {index}")
    return document


def load_report(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ZvperfError(f"{path}: file not found.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ZvperfError(f"{path} cannot be read as JSON ({exc}).") from None
    return check_report(document, str(path))


# --- rows -----------------------------------------------------------------------------------------------------------


def _status(label: str) -> str:
    """A verdict's label; the failing ones (upper case) in bold."""
    return f"**{inert(label)}**" if label.isupper() else inert(label)


def _row(verdict: dict[str, Any], link: str) -> list[str]:
    status = _status(verdict["label"])
    if verdict["confirmed"]:
        status += f" (confirmed: {inert(verdict['confirmed'])})"
    if verdict["reason"]:
        status += f": {inert(verdict['reason'])}"
    median, reference, change, p = (verdict[k] for k in ("median", "baseline_median", "change", "p"))
    return [
        code(verdict["id"]),
        seconds(median) if median is not None else "-",
        f"{seconds(reference)} ({inert(verdict['reference'])})" if reference is not None else "-",
        f"{change:+.1%}" if change is not None else "-",
        f"{p_number(p)} ({inert(verdict['method'] or '')})" if p is not None else "-",
        p_number(verdict["p_adjusted"]) if verdict["p_adjusted"] is not None else "-",
        _counts(verdict),
        status + link,
        inert(verdict["gpu"]),
    ]


def _counts(verdict: dict[str, Any]) -> str:
    """``3/8 (21/56)``: the processes whose medians were tested, new/reference, and their pooled rounds."""
    rounds = "/".join(map(str, verdict["rounds"])) if verdict["rounds"] else "-"
    processes = verdict.get("processes")  # reports of zvperf before process-level tests have none
    if isinstance(processes, list | tuple) and _is_pair(list(processes)):  # a tuple before it went through JSON
        return f"{processes[0]}/{processes[1]} ({rounds})"
    return rounds


def _figure_rows(verdict: dict[str, Any], link: str) -> list[list[str]]:
    """One row per figure judged (peak memory, energy per audio second)."""
    rows = []
    for figure in verdict["metrics"]:

        def text(value: float, figure: dict[str, Any] = figure) -> str:
            return f"{value:.{figure['decimals']}f} {inert(figure['unit'])}"

        value, reference, change = figure["value"], figure["reference"], figure["change"]
        failing = figure["label"].isupper()
        rows.append(
            [
                code(verdict["id"]),
                inert(figure["metric"]),
                text(value) if value is not None else "-",
                f"{text(reference)} ({inert(verdict['reference'])})" if reference is not None else "-",
                f"{change:+.1%}" if change is not None else "-",
                f"{figure['threshold']:.0%}",
                "/".join(map(str, figure["runs"])),
                _status(figure["label"])
                + (f": {inert(figure['reason'])}" if figure["reason"] else "")
                + (link if failing else ""),
            ]
        )
    return rows


def _line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


@dataclasses.dataclass
class _Block:
    """Lines whose last rows may be cut to fit the limit: a table (its head goes with its last row) or a list."""

    head: list[str]
    rows: list[str]
    folded: bool  # in <details>: cut before the failing rows
    kept: int = 0

    def __post_init__(self) -> None:
        self.kept = len(self.rows)

    def lines(self) -> list[str]:
        return [*self.head, *self.rows[: self.kept]] if self.kept else []


def _table(columns: Sequence[str], rows: list[list[str]], folded: bool) -> _Block:
    return _Block([_line(columns), "|" + "---|" * len(columns)], [_line(row) for row in rows], folded)


Item = str | _Block


def _report(document: dict[str, Any], link: str) -> tuple[list[Item], list[Item]]:
    """One report's failing part (heading, summary, warnings, failing rows) and its folded part (the other rows)."""
    key = document["hardware_key"]
    outcome = "FAILED" if document["failed"] else "passed"
    first: list[Item] = [
        f"### zvperf gate on {code(key, in_table=False)}: {outcome}",
        "",
        inert(document["summary"]),
        "",
    ]
    if document["confirmation"]:
        first += [f"Confirmation: {inert(document['confirmation'])}", ""]
    warnings = [f"> warning: {inert(w)}" for w in document["warnings"]]
    warnings += [
        f"> warning: {code(v['id'], in_table=False)}: {inert(w)}" for v in document["verdicts"] for w in v["warnings"]
    ]
    if warnings:
        first += [_Block([], warnings, folded=False), ""]
    failing = [v for v in document["verdicts"] if v["failing"]]
    rest = [v for v in document["verdicts"] if not v["failing"]]
    if failing:
        first += [_table(TABLE_COLUMNS, [_row(v, link) for v in failing], folded=False), ""]
        figures = [row for v in failing for row in _figure_rows(v, link)]
        if figures:
            first += [FIGURES_HEADING, "", _table(FIGURE_COLUMNS, figures, folded=False), ""]
    first += [f"<sub>{inert(document['settings'])}</sub>", ""]
    if not rest:
        return first, []
    counts = Counter(v["label"] for v in rest)
    said = ", ".join(f"{count} {label}" for label, count in counts.items())
    folded: list[Item] = [
        f"<details><summary>{len(rest)} not failing on {inert_html(key)}: {inert_html(said)}</summary>",
        "",
        _table(TABLE_COLUMNS, [_row(v, "") for v in rest], folded=True),
        "",
    ]
    figures = [row for v in rest for row in _figure_rows(v, "")]
    if figures:
        folded += [FIGURES_HEADING, "", _table(FIGURE_COLUMNS, figures, folded=True), ""]
    return first, [*folded, "</details>", ""]


def _lines(items: Sequence[Item]) -> list[str]:
    return [line for item in items for line in ([item] if isinstance(item, str) else item.lines())]


def _size(items: Sequence[Item]) -> int:
    return sum(len(line) + 1 for line in _lines(items))


def _fit(items: list[Item], budget: int) -> str:
    """Cut rows from the end, folded ones first, until the items fit ``budget``; the note saying what was cut."""
    blocks = [item for item in items if isinstance(item, _Block)]
    size = _size(items)
    for block in sorted(reversed(blocks), key=lambda b: not b.folded):  # folded first, each kind from the end
        while size > budget and block.kept:
            block.kept -= 1
            size -= len(block.rows[block.kept]) + 1 + (sum(len(h) + 1 for h in block.head) if not block.kept else 0)
    cut = {
        folded: (
            sum(len(b.rows) - b.kept for b in blocks if b.folded == folded),
            sum(len(b.rows) for b in blocks if b.folded == folded),
        )
        for folded in (True, False)
    }
    if not any(dropped for dropped, _ in cut.values()):
        return ""
    (folded_cut, folded_all), (failing_cut, failing_all) = cut[True], cut[False]
    return (
        f"> **Cut to stay under GitHub's limit of {COMMENT_LIMIT:,} characters:** {folded_cut} of {folded_all} folded "
        f"rows and {failing_cut} of {failing_all} failing rows and warnings, from the end; the reports' JSON holds "
        "every one."
    )


def render(documents: Sequence[dict[str, Any]], run_url: str | None = None) -> str:
    """The reports as one Markdown text under COMMENT_LIMIT: the failing parts of all, then the folded parts."""
    link = f" [run]({run_link(run_url)})" if run_url else ""
    parts = [_report(document, link) for document in documents]
    items: list[Item] = [f"[The workflow run]({run_link(run_url)})", ""] if run_url else []
    items += [item for first, _ in parts for item in first] + [item for _, folded in parts for item in folded]
    note = _fit(items, COMMENT_LIMIT - RESERVED)
    lines = ([note, ""] if note else []) + _lines(items)
    text = "\n".join(lines).rstrip("\n") + "\n"
    if len(text) > COMMENT_LIMIT - RESERVED:  # the parts no row can shorten (many reports): the end goes
        text = text[: text.rfind("\n", 0, COMMENT_LIMIT - RESERVED) + 1] + "\n(cut: the rest passes GitHub's limit)\n"
    return text
