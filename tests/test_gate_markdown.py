"""The gate's Markdown (a job summary, the pull request's comment): every text from the results inert, failing rows
first with a link to the run and the rest folded, under GitHub's 65,536 characters, from the reports' JSON with the
standard library alone."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.gate_data import KEY, bench, plain, spread_rounds, store, table_cells, with_unmeasured, write_processes
from zvperf.cli import main
from zvperf.gate.markdown import COMMENT_LIMIT, TABLE_COLUMNS, ZERO_WIDTH_SPACE, inert

ROOT = Path(__file__).parents[1]
RUN = "https://github.com/owner/repo/actions/runs/42"
HOSTILE = (
    "<img src=x onerror=alert(1)> @octocat **bold** _em_ ~~gone~~ [link](https://example.com) ![i](x) `tick` | "
    "#12 :smile: www.example.com http://example.com &amp; \\ <script>alert(1)</script>\n# heading"
)
EVIL = "evil`|<b>-1step"  # a configuration id with a backtick, a pipe and a tag in it
OUR_TAGS = re.compile(r"</?(details|summary|sub)>")


def hostile_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A gate report as CI writes it (``zvperf compare --format json``), whose every text from the results is
    hostile: an id, the weights (a warning), a skip reason (missing), an error (errored), GPU throttle reasons."""
    names = ("a-1step", EVIL, "b-1step", "c-1step", "d-1step")
    store(tmp_path / "bl", tmp_path / "old.json", [bench(name, spread_rounds(0.1)) for name in names])
    throttled = {"gpu": {"available": True, "throttled": True, "clock_event_reasons": [HOSTILE]}}
    new = [
        bench("a-1step", spread_rounds(0.125), weights=HOSTILE),  # slower: fails
        bench(EVIL, spread_rounds(0.1)),
        bench("d-1step", spread_rounds(0.1), telemetry=throttled),
    ]
    # Four processes: against eight the exact test's floor, 1/495, stays below alpha adjusted over the three rows.
    first, *rest = write_processes(tmp_path / "new.json", new, count=4)
    results = with_unmeasured(
        first,
        {
            "b-1step solver": {"outcome": "skipped", "reason": HOSTILE},
            "c-1step solver": {"outcome": "failed", "reason": HOSTILE},
        },
    )
    paths = [str(run.path) for run in (results, *rest)]
    assert main(["compare", *paths, "--baselines-dir", str(tmp_path / "bl"), "--format", "json"]) == 1
    path = tmp_path / f"gate-{KEY}.json"
    path.write_text(capsys.readouterr().out)
    return path


def comment(capsys: pytest.CaptureFixture[str], *paths: Path, code: int = 0) -> str:
    assert main(["comment", *map(str, paths), "--run-url", RUN]) == code
    return capsys.readouterr().out


def test_every_text_from_the_results_is_escaped_in_the_markdown_source(tmp_path: Path, capsys):
    md = comment(capsys, hostile_report(tmp_path, capsys))
    outside_code = re.sub(r"(`+).+?\1", "", OUR_TAGS.sub("", md))  # in a code span nothing is HTML
    assert re.findall(r"(?<!\\)<[A-Za-z/!?]", outside_code) == []  # no other tag, comment or declaration opens
    assert re.search(rf"@(?!{ZERO_WIDTH_SPACE})", md) is None and "www.example" not in md  # nobody called, no link
    for line in md.splitlines():
        cells = table_cells(line)
        assert not cells or len(cells) in (len(TABLE_COLUMNS), 8), line  # a pipe inside a text split no cell
    # Read back, the texts are all there as written (one line each).
    assert " ".join(HOSTILE.split()) in plain(md)
    assert f"``{EVIL.replace('|', chr(92) + '|')} solver``" in md  # a code span with a longer fence
    rows = {plain(cells[0]): cells for cells in map(table_cells, md.splitlines()) if cells}
    assert {"`a-1step solver`", "`b-1step solver`", "`c-1step solver`"} <= rows.keys()
    assert plain(rows["`c-1step solver`"][7]).startswith("**ERROR**: failed: <img src=x onerror=alert(1)> @octocat")


def test_every_text_from_the_results_renders_inert_in_githubs_markdown(tmp_path: Path, capsys):
    """Rendered by cmark-gfm, GitHub's own Markdown (with raw HTML let through, as GitHub passes it on to its
    sanitiser): no tag, link, emphasis or cell the results wrote, only the text."""
    cmarkgfm = pytest.importorskip("cmarkgfm", reason="cmarkgfm renders GitHub's Markdown (pip install cmarkgfm)")
    from cmarkgfm.cmark import Options

    md = comment(capsys, hostile_report(tmp_path, capsys))
    html = cmarkgfm.github_flavored_markdown_to_html(md, options=Options.CMARK_OPT_UNSAFE)
    assert not re.search(r"<(img|script|b|em|del|h1|h2|h\d id)\b", html)
    assert re.findall(r'href="([^"]*)"', html) == [RUN] * 4  # the run, and the three failing rows' links
    failing_labels = ("FAIL", "MISSING", "ERROR")
    assert re.findall(r"<strong>([^<]*)</strong>", html) == list(failing_labels)  # ours alone
    assert all(len(re.findall(r"<t[dh]", row)) in (9, 8) for row in re.findall(r"<tr>.*?</tr>", html, re.S))
    text = re.sub(r"<[^>]+>", "", html)
    assert re.search(r"@[A-Za-z0-9]", text) is None and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_failing_rows_come_first_with_the_run_link_and_the_rest_is_folded(tmp_path: Path, capsys):
    md = comment(capsys, hostile_report(tmp_path, capsys))
    lines = md.splitlines()
    assert lines[0] == f"[The workflow run]({RUN})"
    fold = lines.index(next(line for line in lines if line.startswith("<details>")))
    rows = [(i, table_cells(line)) for i, line in enumerate(lines) if table_cells(line)[:1] != ["benchmark"]]
    failing = [i for i, cells in rows if cells and cells[7].startswith("**")]
    passing = [i for i, cells in rows if cells and not cells[7].startswith("**")]
    assert len(failing) == 3 and max(failing) < fold < min(passing)
    assert all(lines[i].endswith(f"[run]({RUN}) | -") or f"[run]({RUN})" in lines[i] for i in failing)
    assert not any("[run](" in lines[i] for i in passing)
    assert lines[fold] == f"<details><summary>2 not failing on {KEY}: 1 pass, 1 inconclusive</summary>"


def _many(document: dict[str, Any], rows: int, failing: bool, reason: str) -> dict[str, Any]:
    """The report with ``rows`` verdicts made from its first, failing or not, each with a long reason."""
    many = copy.deepcopy(document)
    first = many["verdicts"][0]
    label = "FAIL" if failing else "pass"
    many["verdicts"] = [
        {**first, "id": f"row-{i}-1step solver", "reason": reason, "failing": failing, "label": label, "warnings": []}
        for i in range(rows)
    ]
    return many


@pytest.mark.parametrize("failing", [False, True], ids=["folded rows cut", "failing rows cut"])
def test_four_runners_comment_stays_under_githubs_limit_and_says_what_was_cut(tmp_path: Path, capsys, failing):
    """Four runners' tables with long reasons are several times GitHub's limit: rows go from the end, folded ones
    first, and a note at the top says how many."""
    document = json.loads(hostile_report(tmp_path, capsys).read_text())
    paths = []
    for runner in range(4):
        path = tmp_path / f"gate-{runner}.json"
        path.write_text(json.dumps(_many(document, 150, failing=failing and runner < 2, reason="slow " * 120)))
        paths.append(path)
    md = comment(capsys, *paths)
    assert len(md) <= COMMENT_LIMIT
    rows = [cells for cells in map(table_cells, md.splitlines()) if cells and cells[0] != "benchmark"]
    kept_failing = sum(cells[7].startswith("**FAIL**") for cells in rows)
    kept_folded = len(rows) - kept_failing
    folded_all, failing_all = (300, 300) if failing else (600, 0)
    note = md.splitlines()[0]
    assert note.startswith("> **Cut to stay under GitHub's limit of 65,536 characters:** ")
    assert f" {folded_all - kept_folded} of {folded_all} folded rows and {failing_all - kept_failing} of " in note
    assert (kept_folded == 0 and kept_failing < 300) if failing else kept_folded < 600


def test_a_file_that_is_no_report_and_a_bad_run_address_are_one_sentence(tmp_path: Path, capsys):
    document = json.loads(hostile_report(tmp_path, capsys).read_text())
    document["verdicts"][0]["median"] = "fast"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(document))
    assert main(["comment", str(broken)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"zvperf comment: error: {broken}: verdict 0 has no valid 'median'; is it a zvperf compare --format json "
        "report?"
    )
    assert main(["comment", str(tmp_path / f"gate-{KEY}.json"), "--run-url", "javascript:alert(1)"]) == 2
    assert "is not an https address" in capsys.readouterr().err


def test_the_comment_is_made_with_the_standard_library_alone(tmp_path: Path, capsys):
    """CI renders it from a checkout of the base commit without installing anything: ``python -S`` has no
    site-packages."""
    report = hostile_report(tmp_path, capsys)
    expected = comment(capsys, report)
    completed = subprocess.run(
        [sys.executable, "-S", "-m", "zvperf", "comment", str(report), "--run-url", RUN],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == expected


def test_inert_keeps_plain_text_readable_and_escapes_each_active_character():
    assert inert("1980 MHz") == "1980 MHz"
    assert inert("a_b *c*") == r"a\_b \*c\*"
    assert plain(inert(HOSTILE)) == " ".join(HOSTILE.split())
