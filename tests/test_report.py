"""``zvperf report``: snapshots of the rendered guide, numbers traced back to the JSON, in-place update, bad input.

The fixtures are a real CPU run of the guide matrix (cpu.json) and a GPU variant derived from it (gpu.json:
synthetic weights, NVML telemetry, a throttled row and torch-fp16 rows). After an intended change to the
report, regenerate the expected markdown with ``ZVPERF_UPDATE_SNAPSHOTS=1 pytest tests/test_report.py`` and
review the diff before committing it.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pytest
from PIL import Image

from tests import history_data as synthetic
from zvperf.cli import main
from zvperf.history.releases import Release
from zvperf.report import plots
from zvperf.report import trends as report_trends

DATA = Path(__file__).parent / "data" / "report"
CPU, GPU = DATA / "cpu.json", DATA / "gpu.json"
BLOCK = re.compile(r"<!-- zvperf:begin (\S+) -->(.*?)<!-- zvperf:end \1 -->", re.S)


def report(tmp_path: Path, *files: Path, lang: str = "en") -> str:
    out = tmp_path / "report.md"
    assert main(["report", *map(str, files), "--lang", lang, "-o", str(out)]) == 0
    return out.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., tuple[str, Path]]:
    """Render each (files, lang) once per module: the markdown and the folder holding it and its figures."""
    cache: dict[tuple[tuple[Path, ...], str], tuple[str, Path]] = {}

    def get(*files: Path, lang: str = "en") -> tuple[str, Path]:
        if (files, lang) not in cache:
            folder = tmp_path_factory.mktemp("report")
            cache[(files, lang)] = report(folder, *files, lang=lang), folder
        return cache[(files, lang)]

    return get


def error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run ``zvperf report`` expecting a user error: exit 2, one line on stderr, no traceback."""
    assert main(["report", *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zvperf report: error: "), lines
    return lines[0]


def blocks(markdown: str) -> dict[str, str]:
    return {name: body for name, body in BLOCK.findall(markdown)}


def table(block: str) -> dict[str, list[str]]:
    """The rows of the markdown table in ``block``, keyed by configuration, bold, code and ⚠ marks removed."""
    rows = {}
    for line in block.splitlines():
        if line.startswith("| **`") or line.startswith("| `"):
            cells = [c.strip().strip("*").strip() for c in line.strip("|").split(" | ")]
            rows[re.sub(r"\s*⚠\d+$", "", cells[0]).strip("`")] = cells[1:]
    return rows


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def median(data: dict[str, Any], kind: str, config_id: str) -> float:
    (entry,) = [b for b in data["benchmarks"] if b["extra_info"]["kind"] == kind and b["param"] == config_id]
    return entry["stats"]["median"]


# --- snapshots ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "files", "expected", "figures"),
    [
        ("ja", [CPU], "cpu.ja.md", ["report-steps.png", "report-rtf.png"]),
        ("en", [CPU], "cpu.en.md", ["report-steps.png", "report-rtf.png"]),
        ("ja", [CPU, GPU], "multi.ja.md", ["report-cpu-amd-epyc-2c-rtf.png", "report-nvidia-h100-80gb-hbm3-rtf.png"]),
        (
            "en",
            [CPU, GPU],
            "multi.en.md",
            ["report-cpu-amd-epyc-2c-steps.png", "report-nvidia-h100-80gb-hbm3-steps.png"],
        ),
    ],
)
def test_rendered_report_matches_the_snapshot(rendered, lang, files, expected, figures):
    markdown, folder = rendered(*files, lang=lang)
    snapshot = DATA / expected
    if os.environ.get("ZVPERF_UPDATE_SNAPSHOTS"):
        snapshot.write_text(markdown, encoding="utf-8")
        pytest.skip(f"regenerated {snapshot}")
    assert markdown == snapshot.read_text(encoding="utf-8")
    for figure in figures:
        assert f"]({figure})" in markdown
        with Image.open(folder / figure) as image:
            assert image.format == "PNG" and image.size[0] > 300
            image.verify()


def test_japanese_report_uses_the_guide_columns(rendered):
    markdown, _ = rendered(CPU, lang="ja")
    assert "| 設定 | モデル推論 (ms) | 合計時間 (ms) | RTF | 高速化 |" in markdown
    for heading in ("## 環境", "## 速度比較", "## 推奨設定", "## 計測上の注意"):
        assert f"\n{heading}\n" in markdown


# --- every number traceable to the JSON ---------------------------------------------------------------------


@pytest.mark.parametrize("fixture", [CPU, GPU])
def test_summary_cells_are_recomputed_from_the_json(rendered, fixture):
    data = load(fixture)
    summary = blocks(rendered(fixture)[0])["summary"]
    rows = table(summary)
    configs = {b["param"] for b in data["benchmarks"] if b["extra_info"]["kind"] == "e2e"}
    assert set(rows) == configs
    reference = median(data, "e2e", "zipvoice-16step-torch-fp32")
    speedups = {}
    for config_id, (solver_ms, e2e_ms, rtf, speedup) in rows.items():
        e2e = next(b for b in data["benchmarks"] if b["extra_info"]["kind"] == "e2e" and b["param"] == config_id)
        assert solver_ms == f"{median(data, 'solver', config_id) * 1e3:.1f}"
        assert e2e_ms == f"{e2e['stats']['median'] * 1e3:.1f}"
        # RTF: compute time over the seconds of audio produced, as the suite defines it.
        assert rtf == f"{e2e['stats']['median'] / e2e['extra_info']['audio_seconds']:.4f}"
        speedups[config_id] = reference / e2e["stats"]["median"]
        assert speedup == f"{speedups[config_id]:.2f}x"
        assert speedup == f"{e2e['extra_info']['speedup_vs_zipvoice16']:.2f}x"
    best = max(speedups, key=speedups.__getitem__)
    bold = [line for line in summary.splitlines() if line.startswith("| **")]
    assert len(bold) == 1 and f"`{best}`" in bold[0]


def test_backend_and_telemetry_cells_come_from_the_json(rendered):
    data = load(GPU)
    parts = blocks(rendered(GPU)[0])
    assert "| zipvoice_distill | 2 | 4.0 | **2.4** |" in parts["backends"]
    assert f"{median(data, 'solver', 'zipvoice_distill-2step-torch-fp16') * 1e3:.1f}" == "2.4"
    telemetry = table(parts["telemetry"])
    for entry in data["benchmarks"]:
        if entry["extra_info"]["kind"] == "e2e":
            t = entry["extra_info"]["telemetry"]
            assert telemetry[entry["param"]] == [
                f"{t['torch_peak_allocated_mib']:.0f}",
                f"{t['gpu']['power_w_mean']:.1f}",
                f"{t['gpu']['joules_per_audio_second']:.2f}",
            ]


def test_cpu_telemetry_says_memory_is_process_rss_and_power_is_absent(rendered):
    part = blocks(rendered(CPU)[0])["telemetry"]
    assert table(part)["zipvoice-16step-torch-fp32"] == ["643", "-", "-"]
    assert "peak resident memory (RSS) of the whole benchmark process" in part
    assert "(not a CUDA run)" in part


def test_flags_are_marked_next_to_their_rows_and_listed(rendered):
    parts = blocks(rendered(GPU)[0])
    assert "| `zipvoice-8step-torch-fp32` ⚠2 |" in parts["summary"]
    assert "- **⚠2** `zipvoice-8step-torch-fp32`\n" in parts["flags"]
    assert "  - solver: `throttled` — the GPU slowed its clocks during the run (sw_power_cap)\n" in parts["flags"]
    assert "- **⚠9** `zipvoice-torch-fp32` (not in the speed table)\n" in parts["flags"]


def test_recommendations_follow_the_stated_rules(rendered):
    part = blocks(rendered(GPU)[0])["recommendations"]
    assert "| Quality | `zipvoice-16step-torch-fp32` | 59.2 |" in part
    # distill steps under RTF 1 are 2, 4, 8: the middle is 4, and fp16 is its fastest precision.
    assert "| Balance | `zipvoice_distill-4step-torch-fp16` | 5.7 |" in part
    assert "| Speed | `zipvoice_distill-2step-torch-fp16` | 2.6 |" in part
    assert "| zipvoice | `zipvoice-4step-torch-fp32` | 17.3 |" in part
    assert (
        "zvperf synth --model zipvoice_distill --num-step 4 --device cuda --precision fp16 --weights synthetic" in part
    )
    assert (
        "pytest --benchmark-only --zv-device cuda --zv-models zipvoice_distill --zv-steps 2 --zv-backends torch "
        '--zv-precision fp16 --zv-weights synthetic --zv-rounds 5 -k "zipvoice_distill-2step-torch-fp16"'
    ) in part


def test_slow_hardware_without_a_reference_row(tmp_path):
    """No zipvoice 16-step row and every RTF above 1: no speed-ups, no bold row, no real-time pick."""
    data = load(CPU)
    data["benchmarks"] = [b for b in data["benchmarks"] if b["extra_info"]["model"] == "zipvoice_distill"]
    for entry in data["benchmarks"]:
        entry["extra_info"]["speedup_vs_zipvoice16"] = None
        entry["extra_info"]["rtf"] += 1.0
    parts = blocks(report(tmp_path, write_json(tmp_path / "slow.json", data)))
    assert all(cells[3] == "-" for cells in table(parts["summary"]).values())
    assert "| **" not in parts["summary"] and "no zipvoice 16-step row" in parts["summary"]
    assert "| Quality | - | - | - | - |" in parts["recommendations"]
    assert "| Balance | - | - | - | - |" in parts["recommendations"]
    assert "No configuration ran faster than real time" in parts["recommendations"]


def test_several_files_give_one_section_per_hardware_key(rendered):
    markdown, folder = rendered(CPU, GPU)
    assert re.findall(r"^## (\S+)$", markdown, re.M) == ["cpu-amd-epyc-2c", "nvidia-h100-80gb-hbm3"]
    names = blocks(markdown)
    assert {"summary/cpu-amd-epyc-2c", "summary/nvidia-h100-80gb-hbm3", "flags/nvidia-h100-80gb-hbm3"} <= set(names)
    assert "NVIDIA H100 80GB HBM3 (79.2 GiB" in names["environment/nvidia-h100-80gb-hbm3"]
    assert "synthetic weights" in names["environment/nvidia-h100-80gb-hbm3"]
    assert "synthetic" not in names["environment/cpu-amd-epyc-2c"]
    for key in ("cpu-amd-epyc-2c", "nvidia-h100-80gb-hbm3"):
        assert f"](report-{key}-steps.png)" in names[f"plots/{key}"]
        assert (folder / f"report-{key}-steps.png").is_file() and (folder / f"report-{key}-rtf.png").is_file()


def test_custom_template_gets_the_same_context(tmp_path):
    template = tmp_path / "mine.md.j2"
    template.write_text(
        "{% for s in sections %}{{ s.key }}: {{ s.recommendations.speed.configuration }} "
        "{{ s.summary.rows[0].speedup }}\n{% endfor %}",
        encoding="utf-8",
    )
    out = tmp_path / "mine.md"
    assert main(["report", str(CPU), "--template", str(template), "-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == "cpu-amd-epyc-2c: zipvoice_distill-2step-torch-fp32 1.00x\n"


# --- in-place update ----------------------------------------------------------------------------------------

PROSE = [
    "# 私のガイド\r\n\r\nこの文章は手で書いた。  \r\n\n",
    "\n\n## Speed\n\nHand-written text between blocks, with trailing spaces   \n",
    "\nThe end, without a final newline.",
]


def test_update_replaces_only_the_marker_blocks(tmp_path, rendered):
    guide = tmp_path / "guide.md"
    stale = "\n| stale | table |\n"
    document = (
        PROSE[0]
        + f"<!-- zvperf:begin environment -->{stale}<!-- zvperf:end environment -->"
        + PROSE[1]
        + f"<!-- zvperf:begin summary -->{stale}<!-- zvperf:end summary -->"
        + PROSE[2]
    )
    guide.write_bytes(document.encode("utf-8"))
    assert main(["report", str(CPU), "--lang", "en", "--update", str(guide)]) == 0
    updated = guide.read_bytes().decode("utf-8")
    fresh = blocks(rendered(CPU)[0])
    pieces = re.split(r"<!-- zvperf:(?:begin|end) \S+ -->", updated)
    assert [pieces[0], pieces[2], pieces[4]] == PROSE  # byte for byte, CRLF and trailing spaces included
    assert pieces[1] == fresh["environment"] and pieces[3] == fresh["summary"]
    assert stale not in updated
    assert (tmp_path / "guide-steps.png").is_file() and (tmp_path / "guide-rtf.png").is_file()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("x\n<!-- zvperf:begin summary -->\n<!-- zvperf:end summary -->\n<!-- zvperf:begin speed -->\n"
         "<!-- zvperf:end speed -->\n", "marker block 'speed' is not one the report generates"),
        ("<!-- zvperf:begin summary -->\nno end\n", "marker 'zvperf:begin summary' has no matching end"),
        ("<!-- zvperf:begin summary -->\n<!-- zvperf:end flags -->\n", "marker 'zvperf:end flags' has no matching"),
        ("just prose\n", "has no '<!-- zvperf:begin NAME -->' markers"),
    ],
)  # fmt: skip
def test_update_refuses_bad_markers_and_leaves_the_file_alone(tmp_path, capsys, document, message):
    guide = tmp_path / "guide.md"
    guide.write_text(document, encoding="utf-8")
    line = error(capsys, str(CPU), "--update", str(guide))
    assert str(guide) in line and message in line
    assert guide.read_text(encoding="utf-8") == document
    assert sorted(p.name for p in tmp_path.iterdir()) == ["guide.md"]  # no figures, no temporary file


# --- bad input ----------------------------------------------------------------------------------------------


def without_extra_key(tmp_path: Path) -> Path:
    data = load(CPU)
    del data["benchmarks"][2]["extra_info"]["rtf"]
    return write_json(tmp_path / "no-rtf.json", data)


def no_benchmarks(tmp_path: Path) -> Path:
    return write_json(tmp_path / "other.json", {"results": [1, 2]})


def not_json(tmp_path: Path) -> Path:
    path = tmp_path / "broken.json"
    path.write_text("{ not json", encoding="utf-8")
    return path


def no_extra_info(tmp_path: Path) -> Path:
    data = copy.deepcopy(load(CPU))
    data["benchmarks"][0]["extra_info"] = {}
    return write_json(tmp_path / "plain.json", data)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (not_json, "not valid JSON"),
        (no_benchmarks, "not pytest-benchmark output"),
        (no_extra_info, "has no zvperf extra_info"),
        (without_extra_key, "lacks zvperf's extra_info key 'rtf'"),
        (lambda tmp_path: tmp_path / "missing.json", "file not found"),
    ],
)
def test_bad_results_file_is_named_with_what_is_missing(tmp_path, capsys, make, message):
    path = make(tmp_path)
    out = tmp_path / "out.md"
    line = error(capsys, str(path), "-o", str(out))
    assert str(path) in line and message in line
    assert not out.exists()


def test_the_same_benchmark_twice_for_one_hardware_key_is_refused(tmp_path, capsys):
    copy_path = write_json(tmp_path / "again.json", load(CPU))
    line = error(capsys, str(CPU), str(copy_path), "-o", str(tmp_path / "out.md"))
    assert str(copy_path) in line and "'zipvoice-16step-torch-fp32 solver' is also in" in line


def test_missing_or_broken_template(tmp_path, capsys):
    missing = tmp_path / "nope.j2"
    assert f"--template {missing}: file not found" in error(
        capsys, str(CPU), "--template", str(missing), "-o", str(tmp_path / "out.md")
    )
    broken = tmp_path / "broken.j2"
    broken.write_text("line one\n{% for x in %}\n", encoding="utf-8")
    line = error(capsys, str(CPU), "--template", str(broken), "-o", str(tmp_path / "out.md"))
    assert str(broken) in line and "syntax error on line 2" in line
    unknown = tmp_path / "unknown.j2"
    unknown.write_text("{{ sections[0].no_such_part }}\n", encoding="utf-8")
    line = error(capsys, str(CPU), "--template", str(unknown), "-o", str(tmp_path / "out.md"))
    assert str(unknown) in line and "no_such_part" in line


def test_results_without_solver_or_e2e_rows_are_refused(tmp_path, capsys):
    data = load(CPU)
    data["benchmarks"] = [b for b in data["benchmarks"] if b["extra_info"]["kind"] == "cold_start"]
    path = write_json(tmp_path / "cold.json", data)
    line = error(capsys, str(path), "-o", str(tmp_path / "out.md"))
    assert str(path) in line and "holds no solver or e2e benchmarks" in line


def test_output_must_be_a_file_in_an_existing_folder(tmp_path, capsys):
    out = tmp_path / "no" / "such" / "report.md"
    line = error(capsys, str(CPU), "-o", str(out))
    assert str(out) in line and "does not exist" in line
    assert f"{tmp_path}: is a folder" in error(capsys, str(CPU), "-o", str(tmp_path))
    missing = tmp_path / "guide.md"
    assert f"--update {missing}: file not found" in error(capsys, str(CPU), "--update", str(missing))


# --- history --------------------------------------------------------------------------------------------------

CPU_KEY = "cpu-amd-epyc-2c"
STEP_COMMIT = synthetic.commit_id(synthetic.STEP_AT)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic 40-commit history (tests/history_data.py) recorded under the CPU fixture's hardware key."""
    folder = tmp_path_factory.mktemp("history")
    paths = synthetic.write_runs(folder / "results", key=CPU_KEY)
    assert main(["history", "add", *map(str, paths), "--history-dir", str(folder / "history")]) == 0
    return folder / "history"


@pytest.mark.parametrize("lang", ["ja", "en"])
def test_history_section_has_a_trend_plot_per_model_and_the_standing_regressions(tmp_path, monkeypatch, history, lang):
    monkeypatch.chdir(tmp_path)  # no git checkout here: regressions are counted from the start of the history
    out = tmp_path / "guide.md"
    assert main(["report", str(CPU), "--history", str(history), "--lang", lang, "-o", str(out)]) == 0
    block = blocks(out.read_text(encoding="utf-8"))["history"]
    for model in ("zipvoice", "zipvoice_distill"):
        figure = f"guide-history-{model}.png"
        assert f"]({figure})" in block
        with Image.open(tmp_path / figure) as image:
            assert image.format == "PNG" and image.size[0] > 800
            image.verify()
    rows = table(block)
    assert set(rows) == {f"{synthetic.STEP_CONFIG} solver", f"{synthetic.STEP_CONFIG} e2e"}
    for name, (commit, date, before, after, change) in rows.items():
        kind = name.rpartition(" ")[2]
        assert commit == f"`{STEP_COMMIT[:12]}`" and date == "2026-01-24"
        assert float(before) == pytest.approx(synthetic.level(synthetic.STEP_CONFIG, kind, 0) * 1e3, rel=0.02)
        assert float(after) == pytest.approx(synthetic.level(synthetic.STEP_CONFIG, kind, 39) * 1e3, rel=0.02)
        assert change.startswith("+") and 8 <= float(change.strip("+%")) <= 12
    drifting = [line for line in block.splitlines() if line.startswith("- `")]
    assert {line.split("`")[1] for line in drifting} == {f"{synthetic.DRIFT_CONFIG} {k}" for k in ("solver", "e2e")}
    assert ("40 runs of 40 commits" in block) == (lang == "en") and ("40 コミット分、40 回の計測" in block) == (
        lang == "ja"
    )


def test_history_plot_draws_each_configuration_with_its_change_points_and_hollow_flagged_runs(history):
    release = Release("v1.0", synthetic.commit_id(10), synthetic.commit_time(10))
    recorded = report_trends.load(history, CPU_KEY, release)
    figure = plots.history_figure("zipvoice_distill", recorded.by_model["zipvoice_distill"], release)
    try:
        for ax, kind in zip(figure.axes, ("solver", "e2e"), strict=True):
            lines = {line.get_gid(): line for line in ax.get_lines() if line.get_gid()}
            variants = ("4step torch-fp32", "2step torch-fp32")  # the model's two configurations
            assert set(lines) == {f"{v}{part}" for v in variants for part in ("", " hollow", " changes")} | {"release"}
            for variant, config_id in zip(variants, (synthetic.STEP_CONFIG, synthetic.FLAT_CONFIG), strict=True):
                line = lines[variant]
                assert list(line.get_xdata()) == list(range(synthetic.RUNS)) and line.get_label() == variant
                expected = [synthetic.level(config_id, kind, k) * 1e3 for k in range(synthetic.RUNS)]
                assert list(line.get_ydata()) == pytest.approx(expected, rel=0.05)
            assert list(lines["4step torch-fp32 changes"].get_xdata()) == [synthetic.STEP_AT]
            assert list(lines["2step torch-fp32 changes"].get_xdata()) == []
            hollow = lines["2step torch-fp32 hollow"]
            assert list(hollow.get_xdata()) == (list(synthetic.DOUBTFUL) if kind == "solver" else [])
            assert hollow.get_markerfacecolor() == "white" and list(lines["4step torch-fp32 hollow"].get_xdata()) == []
            assert list(lines["release"].get_xdata()) == [10, 10]
    finally:
        plt.close(figure)


def test_history_for_keys_without_a_file_and_bad_history_options(tmp_path, monkeypatch, capsys, history):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "guide.md"
    assert main(["report", str(CPU), str(GPU), "--history", str(history), "--lang", "en", "-o", str(out)]) == 0
    sections = blocks(out.read_text(encoding="utf-8"))
    assert "| `zipvoice_distill-4step-torch-fp32 solver` |" in sections[f"history/{CPU_KEY}"]
    assert sections["history/nvidia-h100-80gb-hbm3"].strip() == (
        f"No history is recorded for nvidia-h100-80gb-hbm3 in `{history}` "
        "(`zvperf history add RESULTS.json` records a run)."
    )
    missing = tmp_path / "nowhere"
    assert error(capsys, str(CPU), "--history", str(missing), "-o", str(out)).endswith(
        f"--history {missing}: folder not found."
    )
    assert error(capsys, str(CPU), "--since", "v1.0", "-o", str(out)).endswith(
        "--since counts regressions in the history: it needs --history DIR."
    )
