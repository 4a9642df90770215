"""``zvperf export``: the files are accepted by each format's documented rules, and carry the run's numbers.

The validators below are written from each format's documentation (no network, nothing vendored):

* Bencher Metric Format: the JSON schema https://bencher.dev/bmf.json (draft-07: an object of benchmarks, each an
  object of measures, each an object with a required numeric ``value`` and optional numeric ``lower_value`` and
  ``upper_value``) and the name rules of Bencher's docs and ``lib/bencher_valid`` (a benchmark name of 1 to 1024
  characters; a measure named by a slug or a trimmed name of at most 64 characters). JSON has no NaN or infinity.
* github-action-benchmark: the ``BenchmarkResult`` schema in ``src/extract.ts`` (v1.22.0: ``name``, ``unit``
  strings, ``value`` a number, optional ``range`` and ``extra`` strings, in a JSON array) and its README, which says
  an empty array fails ("No benchmark result was found"); checked strictly (no coercion of strings or nulls to
  numbers, which the action would accept silently).

Each validator is first shown to accept the format's own documented example and to reject broken variants.
"""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from tests.gate_data import bench, spread_rounds, write_results
from zvperf.cli import main
from zvperf.results.schema import load_results

DATA = Path(__file__).parent / "data" / "report"
CPU, GPU = DATA / "cpu.json", DATA / "gpu.json"


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def bmf_errors(document: Any) -> list[str]:
    """What makes ``document`` not Bencher Metric Format ([] when it is)."""
    if not isinstance(document, dict) or not document:
        return ["the top level is not a non-empty object of benchmarks"]
    errors = []
    for benchmark, measures in document.items():
        if not 1 <= len(benchmark) <= 1024:
            errors.append(f"benchmark name {benchmark!r} is not 1 to 1024 characters")
        if not isinstance(measures, dict) or not measures:
            errors.append(f"{benchmark}: not a non-empty object of measures")
            continue
        for measure, metric in measures.items():
            if measure != measure.strip() or not 0 < len(measure) <= 64:
                errors.append(f"{benchmark}: measure {measure!r} is not a slug or name of 1 to 64 characters")
            if not isinstance(metric, dict) or "value" not in metric:
                errors.append(f"{benchmark}/{measure}: no 'value'")
                continue
            for key in ("value", "lower_value", "upper_value"):
                if key in metric and not _number(metric[key]):
                    errors.append(f"{benchmark}/{measure}: {key} {metric[key]!r} is not a finite number")
    return errors


def github_errors(document: Any) -> list[str]:
    """What makes ``document`` not a github-action-benchmark custom tool file ([] when it is)."""
    if not isinstance(document, list) or not document:
        return ["the top level is not a non-empty array"]
    errors = []
    for index, entry in enumerate(document):
        if not isinstance(entry, dict):
            errors.append(f"[{index}] is not an object")
            continue
        for key in ("name", "unit"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                errors.append(f"[{index}].{key} is not a non-empty string")
        if not _number(entry.get("value")):
            errors.append(f"[{index}].value {entry.get('value')!r} is not a finite number")
        for key in ("range", "extra"):
            if key in entry and not isinstance(entry[key], str):
                errors.append(f"[{index}].{key} is not a string")
    names = [entry.get("name") for entry in document if isinstance(entry, dict)]
    errors += [f"name {name!r} appears twice" for name in {n for n in names if names.count(n) > 1}]
    return errors


# The formats' own examples, as their documentation prints them.
BMF_EXAMPLE = {
    "benchmark_name": {
        "latency": {"value": 88.0, "lower_value": 87.42, "upper_value": 88.88},
        "throughput": {"value": 5.55, "lower_value": 3.14, "upper_value": 6.30},
    },
    "/bin/sh -c ./my_build_script.sh": {"build-time": {"value": 87.0}},
    "my_binary": {"file-size": {"value": 42.0}},
}
GITHUB_EXAMPLE = [
    {"name": "My Custom Smaller Is Better Benchmark - CPU Load", "unit": "Percent", "value": 50},
    {
        "name": "My Custom Smaller Is Better Benchmark - Memory Used",
        "unit": "Megabytes",
        "value": 100,
        "range": "3",
        "extra": "Value for Tooltip: 25\nOptional Num #2: 100\nAnything Else!",
    },
]


def broken(example: Any, change: Any) -> Any:
    document = copy.deepcopy(example)
    change(document)
    return document


@pytest.mark.parametrize(
    ("validator", "example", "change"),
    [
        (bmf_errors, BMF_EXAMPLE, lambda d: d["benchmark_name"]["latency"].pop("value")),
        (bmf_errors, BMF_EXAMPLE, lambda d: d["my_binary"]["file-size"].update(value="42")),
        (bmf_errors, BMF_EXAMPLE, lambda d: d.update(empty={})),
        (bmf_errors, BMF_EXAMPLE, lambda d: d["my_binary"].update({"x" * 65: {"value": 1.0}})),
        (github_errors, GITHUB_EXAMPLE, lambda d: d[0].pop("unit")),
        (github_errors, GITHUB_EXAMPLE, lambda d: d[0].update(value=None)),
        (github_errors, GITHUB_EXAMPLE, lambda d: d[1].update(range=3)),
        (github_errors, GITHUB_EXAMPLE, lambda d: d.append(dict(d[0]))),
    ],
)
def test_the_validators_accept_the_documented_examples_and_reject_broken_ones(validator, example, change):
    assert validator(example) == []
    assert validator(broken(example, change))
    assert validator([] if isinstance(example, list) else {})


def export(tmp_path: Path, results: Path, fmt: str) -> Any:
    out = tmp_path / f"{fmt}.json"
    assert main(["export", "--format", fmt, str(results), "-o", str(out)]) == 0
    return json.loads(out.read_text(encoding="utf-8"))


@pytest.mark.parametrize("results", [CPU, GPU], ids=["cpu", "gpu"])
def test_bencher_export_is_valid_bmf_with_the_runs_numbers(tmp_path, results):
    document = export(tmp_path, results, "bencher")
    assert bmf_errors(document) == []
    run = load_results(results)
    assert sorted(document) == sorted(r.id for r in run.results)
    for result in run.results:
        measures = document[result.id]
        latency = measures["latency"]  # Bencher's built-in measure is in nanoseconds
        assert latency["value"] == pytest.approx(result.median * 1e9)
        assert latency["lower_value"] == pytest.approx(result.stats["q1"] * 1e9)
        assert latency["upper_value"] == pytest.approx(result.stats["q3"] * 1e9)
        assert latency["lower_value"] <= latency["value"] <= latency["upper_value"]
        assert measures["rtf"]["value"] == pytest.approx(result.facts.rtf)
        assert measures["peak-memory-mib"]["value"] == pytest.approx(result.facts.peak_memory_mib)
        energy = result.facts.gpu_telemetry.get("joules_per_audio_second")
        assert ("energy-per-audio-second" in measures) == (energy is not None)
        if energy is not None:
            assert measures["energy-per-audio-second"]["value"] == pytest.approx(energy)
    assert any("energy-per-audio-second" in m for m in document.values()) == (results == GPU)


@pytest.mark.parametrize("results", [CPU, GPU], ids=["cpu", "gpu"])
def test_github_action_benchmark_export_is_valid_with_the_runs_numbers(tmp_path, results):
    document = export(tmp_path, results, "github-action-benchmark")
    assert github_errors(document) == []
    run = load_results(results)
    entries = {entry["name"]: entry for entry in document}
    ranges = []
    for result in run.results:
        latency = entries[f"{result.id} - latency"]
        assert latency["unit"] == "ms" and latency["value"] == pytest.approx(result.median * 1e3)
        # The range reaches from the median down to the first quartile and up to the third, in ms.
        down, up = (float(part) for part in re.fullmatch(r"-(\S+) \+(\S+)", latency["range"]).groups())
        assert result.median - down / 1e3 == pytest.approx(result.stats["q1"], rel=1e-5)
        assert result.median + up / 1e3 == pytest.approx(result.stats["q3"], rel=1e-5)
        ranges.append((down, up))
        assert run.hardware_key in latency["extra"] and all(f"flag {f}" in latency["extra"] for f in result.flags)
        assert f"commit {run.commit[:12]}" in latency["extra"].splitlines()
        assert entries[f"{result.id} - rtf"]["value"] == pytest.approx(result.facts.rtf)
        assert entries[f"{result.id} - peak memory"]["unit"] == "MiB"
    energy = [e for e in document if e["name"].endswith("energy per audio second")]
    assert bool(energy) == (results == GPU) and all(e["unit"] == "J/s of audio" for e in energy)
    assert any(abs(down - up) > 0.2 * max(down, up) for down, up in ranges)  # off-centre medians, said as they are


def test_github_action_benchmark_export_says_a_changed_tree_and_no_range_without_quartiles(tmp_path):
    """A run of uncommitted changes keeps its +dirty (the 12-character commit cut it off); a file saved without
    quartiles has no range, rather than one made up around the median."""
    document = json.loads(CPU.read_text())
    document["commit_info"]["dirty"] = True
    dirty = tmp_path / "dirty.json"
    dirty.write_text(json.dumps(document))
    commit = document["commit_info"]["id"]
    assert all(
        f"commit {commit[:12]}+dirty" in e["extra"].splitlines()
        for e in export(tmp_path, dirty, "github-action-benchmark")
        if "extra" in e
    )
    plain = write_results(tmp_path / "r.json", [bench("a-1step", spread_rounds(0.1))], commit="0123456789abcdef")
    (latency, *_) = export(tmp_path, plain.path, "github-action-benchmark")
    assert "range" not in latency and "commit 0123456789ab" in latency["extra"].splitlines()


def test_export_to_standard_output_leaves_out_injected_slowdowns(tmp_path, capsys):
    results = write_results(
        tmp_path / "r.json",
        [bench("a-1step", spread_rounds(0.1)), bench("b-1step", spread_rounds(0.2), injected_slowdown=0.25)],
    )
    assert main(["export", "--format", "bencher", str(results.path)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert list(document) == ["a-1step solver"] and bmf_errors(document) == []
    assert "lower_value" not in document["a-1step solver"]["latency"]  # the file has no quartiles to give


def test_nothing_to_export_and_bad_input_are_one_sentence(tmp_path, capsys):
    only_injected = write_results(tmp_path / "r.json", [bench("a-1step", spread_rounds(0.1), injected_slowdown=0.25)])
    assert main(["export", "--format", "bencher", str(only_injected.path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"zvperf export: error: {only_injected.path}: every benchmark has an injected slowdown; "
        "there is nothing to export."
    )
    assert main(["export", "--format", "bencher", str(tmp_path / "missing.json")]) == 2
    assert capsys.readouterr().err.strip() == f"zvperf export: error: {tmp_path / 'missing.json'}: file not found."
    assert main(["export", "--format", "csv", str(CPU)]) == 2  # argparse names the choices
    assert "invalid choice: 'csv'" in capsys.readouterr().err
