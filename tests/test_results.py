"""The results schema and formats: committed files keep loading, facts round-trip, unknown formats are refused,
and files are replaced atomically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.gate_data import KEY, bench, write_results
from zvperf.errors import ZvperfError
from zvperf.files import replacing, write_atomic
from zvperf.gate import baselines
from zvperf.results.schema import RESULTS_FORMAT, BenchmarkFacts, load_results

ROOT = Path(__file__).parents[1]
COMMITTED_RESULTS = sorted((ROOT / "reports").rglob("*.json")) + sorted((ROOT / "tests/data/report").glob("*.json"))


@pytest.mark.parametrize("path", COMMITTED_RESULTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_results_load_and_their_facts_round_trip(path: Path):
    results = load_results(path)
    raw = json.loads(path.read_text())
    assert results.format == raw.get("zvperf", {}).get("format", 1)
    for result, entry in zip(results.results, raw["benchmarks"], strict=True):
        written = result.facts.as_dict()
        assert written.items() >= entry["extra_info"].items()  # nothing lost ...
        assert all(written[key] is None for key in written.keys() - entry["extra_info"].keys())  # ... or invented
        assert BenchmarkFacts.from_dict(written) == result.facts


def test_committed_baselines_load():
    for key in baselines.hardware_keys(ROOT / "baselines"):
        baseline = baselines.read(baselines.baseline_path(ROOT / "baselines", key))
        assert baseline is not None and baseline.entries


def test_facts_keep_keys_they_do_not_know_and_omit_absent_optional_ones():
    info = bench("a", [1.0, 1.1, 1.2], future_field={"x": 1})["extra_info"]
    facts = BenchmarkFacts.from_dict(info)
    assert facts.other == {"future_field": {"x": 1}}
    out = facts.as_dict()
    assert out["future_field"] == {"x": 1} and "stages_ms" not in out and out["flags"] == []
    with pytest.raises(ValueError, match="lacks zvperf's extra_info key 'nfe'"):
        BenchmarkFacts.from_dict({k: v for k, v in info.items() if k != "nfe"})


def test_results_of_an_unknown_format_are_refused(tmp_path: Path):
    path = tmp_path / "future.json"
    results = write_results(path, [bench("a", [1.0, 1.1, 1.2])])
    assert results.format == 1  # written without a number, as before formats were recorded
    document = json.loads(path.read_text())
    document["zvperf"] = {"format": RESULTS_FORMAT + 1}
    path.write_text(json.dumps(document))
    with pytest.raises(ZvperfError, match=rf"results format {RESULTS_FORMAT + 1} is not one this zvperf reads"):
        load_results(path)


def test_baselines_are_written_with_their_format_and_a_newer_one_is_left_alone(tmp_path: Path):
    results = write_results(tmp_path / "r.json", [bench("a", [1.0, 1.1, 1.2])])
    summary = baselines.update(tmp_path / "bl", results)
    written = json.loads(summary.path.read_text())
    assert written["format"] == baselines.BASELINE_FORMAT
    written["format"] = baselines.BASELINE_FORMAT + 1
    text = json.dumps(written)
    summary.path.write_text(text)
    with pytest.raises(ZvperfError, match=f"has format {baselines.BASELINE_FORMAT + 1}, not one this zvperf reads"):
        baselines.update(tmp_path / "bl", results)
    assert summary.path.read_text() == text
    assert KEY in summary.path.name


def test_a_failed_replacement_leaves_the_old_file_and_no_temporary(tmp_path: Path):
    target = tmp_path / "file.txt"
    write_atomic(target, "old")
    target.chmod(0o640)
    with pytest.raises(RuntimeError), replacing(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]
    write_atomic(target, "new")
    assert target.read_text() == "new" and target.stat().st_mode & 0o777 == 0o640


def test_concurrent_writers_get_their_own_temporary_files(tmp_path: Path):
    target = tmp_path / "graph.onnx"
    with replacing(target) as first, replacing(target) as second:
        assert first != second
        first.write_text("first")
        second.write_text("second")
    assert target.read_text() == "first"  # the outer block finished last: the last rename wins, whole


@pytest.mark.parametrize("version", [2, 3])
def test_a_file_from_before_format_4_reads_without_efficiency(tmp_path: Path, version: int):
    document = json.loads((ROOT / "tests/data/report/cpu.json").read_text())
    document["zvperf"]["format"] = version
    path = tmp_path / f"format{version}.json"
    path.write_text(json.dumps(document))
    results = load_results(path)
    assert results.format == version and results.gemm_rates == {}
    solver = next(r for r in results.results if r.kind == "solver")
    assert (solver.facts.flops, solver.facts.flop_rate, solver.facts.gemm_efficiency) == (None, None, None)
