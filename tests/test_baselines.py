"""Baseline files: contents, atomic locked updates, revert, and broken files that are never overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.gate_data import KEY, bench, spread_rounds, update_many, write_processes, write_results
from tests.helpers import run_at_once
from zvperf.cli import main
from zvperf.cli.calibrate import scaled
from zvperf.errors import ZvperfError
from zvperf.gate import baselines
from zvperf.results.schema import load_results

ID = "zipvoice_distill-4step-torch-fp32 solver"


def test_update_writes_a_diff_friendly_file_with_everything_the_gate_needs(tmp_path: Path):
    results = write_results(
        tmp_path / "r.json",
        [bench("zipvoice_distill-4step-torch-fp32", spread_rounds(0.2, n=80)), bench("b-1step", [0.1, 0.11, 0.12])],
    )
    summary = baselines.update(tmp_path / "bl", results)
    path = tmp_path / "bl" / f"{KEY}.json"
    assert summary.path == path and sorted(summary.added) == ["b-1step solver", ID] and not summary.replaced
    text = path.read_text()
    document = json.loads(text)
    assert text == json.dumps(document, indent=2, sort_keys=True) + "\n"
    assert document["hardware_key"] == KEY and document["machine"]["cpu"] == "Test CPU"
    entry = document["benchmarks"][ID]
    assert entry["rounds"] == 80 and len(entry["data"]) == baselines.MAX_STORED_ROUNDS
    assert min(entry["data"]) == pytest.approx(0.2 * 0.98) and max(entry["data"]) == pytest.approx(0.2 * 1.02)
    assert entry["median"] == pytest.approx(0.2) and entry["iqr"] > 0
    assert entry["versions"] == {
        "torch": "2.11.0",
        "cuda": None,
        "driver": None,
        "tensorrt": None,
        "onnxruntime": None,
        "zipvoice": None,
    }
    assert entry["weights"] == "official" and entry["commit"] == "abc123" and entry["date"].startswith("2026-01-02")
    assert "previous" not in entry
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_update_keeps_the_previous_value_revert_restores_it_and_a_second_revert_undoes(tmp_path: Path):
    directory = tmp_path / "bl"
    baselines.update(directory, write_results(tmp_path / "a.json", [bench("x", [1.0, 1.1, 1.2])], commit="first"))
    summary = baselines.update(directory, write_results(tmp_path / "b.json", [bench("x", [2.0, 2.1])], commit="second"))
    assert summary.replaced == ["x solver"]
    stored = baselines.read(directory / f"{KEY}.json")
    assert stored is not None
    entry = stored.entries["x solver"]
    assert entry.commit == "second" and entry.previous is not None and entry.previous.commit == "first"
    assert entry.previous.previous is None  # one level deep
    restored, replaced = baselines.revert(directory, KEY, "x solver")
    assert restored.commit == "first" and replaced.commit == "second"
    assert main(["baseline", "revert", "x solver", "--hardware-key", KEY, "--baselines-dir", str(directory)]) == 0
    again = baselines.read(directory / f"{KEY}.json")
    assert again is not None and again.entries["x solver"].median == pytest.approx(2.05)


def test_revert_without_a_previous_value_and_unknown_ids_are_errors(tmp_path: Path, capsys):
    directory = tmp_path / "bl"
    baselines.update(directory, write_results(tmp_path / "a.json", [bench("x", [1.0, 1.1, 1.2])]))
    with pytest.raises(ZvperfError, match="'x solver' has no previous value to revert to"):
        baselines.revert(directory, KEY, "x solver")
    assert main(["baseline", "revert", "nope", "--hardware-key", KEY, "--baselines-dir", str(directory)]) == 2
    assert f"{directory / KEY}.json has no entry 'nope'" in capsys.readouterr().err


def test_other_hardware_keys_files_are_never_touched(tmp_path: Path):
    directory = tmp_path / "bl"
    directory.mkdir()
    other = directory / "nvidia-h100-80gb-hbm3.json"
    other.write_text('{"benchmarks": {}, "hand": "written"}')
    baselines.update(directory, write_results(tmp_path / "a.json", [bench("x", [1.0, 1.1, 1.2])]))
    assert other.read_text() == '{"benchmarks": {}, "hand": "written"}'
    assert baselines.hardware_keys(directory) == [KEY, "nvidia-h100-80gb-hbm3"]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"benchmarks": {"x solver": {"median": 1.0,', "is not valid JSON (Expecting"),
        ('{"hardware_key": "cpu-test-2c"}', "has no 'benchmarks' object"),
        (
            '{"benchmarks": {"x solver": {"median": 1.0, "iqr": 0.1, "rounds": 3}}}',
            "entry 'x solver' is malformed (no 'data')",
        ),
        ('{"benchmarks": {"x solver": {"median": "fast", "iqr": 0, "rounds": 3, "data": []}}}', "'median' is not a"),
        (
            '{"benchmarks": {"x solver": {"median": 1, "iqr": 0, "rounds": 3, "data": [], "process_spreads": "low"}}}',
            "entry 'x solver' is malformed ('process_spreads' is not a list of spreads)",
        ),
        (
            '{"benchmarks": {"x solver": {"median": 1, "iqr": 0, "rounds": 3, "data": [], "process_medians": [1, 1.1], '
            '"process_references": [0.025]}}}',
            "entry 'x solver' is malformed ('process_references' has 1 values for 2 process medians)",
        ),
    ],
)
def test_a_broken_baseline_file_is_an_error_naming_it_and_is_not_overwritten(tmp_path: Path, capsys, content, problem):
    directory = tmp_path / "bl"
    directory.mkdir()
    path = directory / f"{KEY}.json"
    path.write_text(content)
    results = tmp_path / "r.json"
    write_results(results, [bench("x", [1.0, 1.1, 1.2])])
    with pytest.raises(ZvperfError) as error:
        baselines.update(directory, write_results(results, [bench("x", [1.0, 1.1, 1.2])]))
    assert str(error.value).startswith(f"baseline file {path}") and problem in str(error.value)
    assert "it was not changed" in str(error.value)
    assert main(["baseline", "update", str(results), "--baselines-dir", str(directory)]) == 2
    assert problem in capsys.readouterr().err
    assert path.read_text() == content


def test_results_with_an_injected_slowdown_never_become_a_baseline(tmp_path: Path):
    results = write_results(tmp_path / "r.json", [bench("x", [1.0, 1.1, 1.2], injected_slowdown=0.25)])
    summary = baselines.update(tmp_path / "bl", results)
    assert summary.skipped == {"x solver": "measured with an injected slowdown (--zv-inject-slowdown)"}
    assert not (tmp_path / "bl" / f"{KEY}.json").exists()


def test_show_lists_the_entries(tmp_path: Path, capsys):
    directory = tmp_path / "bl"
    runs = write_processes(tmp_path / "r.json", [bench("zipvoice_distill-4step-torch-fp32", spread_rounds(3.02))], 7)
    assert main(["baseline", "update", *(str(run.path) for run in runs), "--baselines-dir", str(directory)]) == 0
    assert "1 added, 0 replaced" in capsys.readouterr().out
    assert main(["baseline", "show", "--hardware-key", KEY, "--baselines-dir", str(directory)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{directory / KEY}.json: {KEY} (cpu Test CPU, cpu_cores 2), entries: 1"
    assert out[1].split() == ["benchmark", "median", "IQR", "rounds", "runs", "date", "commit", "weights", "previous"]
    assert out[3].split() == [
        *ID.split(), "3.04", "s", "2.3%", "49", "7", "2026-01-02T03:04:05", "abc123", "official", "-"
    ]  # fmt: skip
    assert main(["baseline", "show", "--hardware-key", "cpu-other-4c", "--baselines-dir", str(directory)]) == 2
    assert "there is no baseline file" in capsys.readouterr().err


def test_several_runs_pool_their_rounds_into_one_entry(tmp_path: Path, capsys):
    directory = tmp_path / "bl"
    fast, slow = tmp_path / "fast.json", tmp_path / "slow.json"
    write_results(fast, [bench("x", [1.0, 1.1, 1.2]), bench("only-fast", [5.0, 5.1, 5.2, 5.3, 5.4])])
    write_results(slow, [bench("x", [1.3, 1.4, 1.5, 1.6])])
    summary = baselines.update(directory, *map(load_results, (fast, slow)))  # without the gate's settings: no refusal
    assert sorted(summary.added) == ["only-fast solver", "x solver"]
    stored = baselines.read(directory / f"{KEY}.json")
    assert stored is not None
    pooled, single = stored.entries["x solver"], stored.entries["only-fast solver"]
    assert pooled.runs == 2 and pooled.rounds == 7 and pooled.median == pytest.approx(1.3)
    assert pooled.data == pytest.approx([1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6])
    assert pooled.process_medians == pytest.approx([1.1, 1.45]) and pooled.processes == pooled.process_medians
    assert single.runs == 1 and single.rounds == 5 and single.processes == [5.2]
    # With them (the CLI), entries too few runs pooled for the gate's three processes to reach alpha are refused.
    assert main(["baseline", "update", str(fast), str(slow), "--baselines-dir", str(tmp_path / "other")]) == 2
    error = capsys.readouterr().err
    assert "could not judge 2 of 2 benchmarks against it, such as 'x solver', pooled from 2 runs" in error
    assert "the exact test on process medians reaches alpha 0.01 from 7 baseline runs" in error


@pytest.mark.parametrize(
    ("other", "differs"),
    [({"commit": "def456"}, "commit"), ({"key": "cpu-other-4c"}, "hardware key"), ({"torch": "2.10.0"}, "software")],
)
def test_runs_of_different_commits_machines_or_software_do_not_pool_into_a_baseline_or_a_side(
    tmp_path: Path, capsys, other, differs
):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    write_results(first, [bench("x", [1.0, 1.1, 1.2])])
    write_results(second, [bench("x", [1.0, 1.1, 1.2])], **other)
    assert main(["baseline", "update", str(first), str(second), "--baselines-dir", str(tmp_path / "bl")]) == 2
    err = capsys.readouterr().err
    assert f"{second} and {first} differ in {differs}" in err and "nothing was written" in err
    assert not (tmp_path / "bl").exists()
    # Nor are they one judged side.
    assert main(["compare", str(first), str(second), "--baselines-dir", str(tmp_path / "bl")]) == 2
    assert f"{second} and {first} differ in {differs}" in capsys.readouterr().err


def test_two_processes_updating_at_once_lose_no_entry(tmp_path: Path):
    count = 25
    run_at_once(update_many, [(tmp_path, prefix, count) for prefix in ("a", "b")])
    stored = baselines.read(tmp_path / "bl" / f"{KEY}.json")
    assert stored is not None
    assert sorted(stored.entries) == sorted(f"{p}{i} solver" for p in ("a", "b") for i in range(count))
    assert not list((tmp_path / "bl").glob(".*.tmp"))  # no temporary file left behind


# --- a baseline the gate cannot judge against ---------------------------------------------------------------------

ROOT = Path(__file__).parents[1]
H100_RUN = ROOT / "reports" / "nvidia-h100-80gb-hbm3" / "results.json"  # the run the H100 baseline was made from


def test_the_h100_baseline_says_it_cannot_judge_a_20_percent_slower_run_and_require_baseline_fails(
    tmp_path: Path, capsys
):
    """The committed H100 baseline is one run: against it, and from one run, no row can be judged. A copy of its own
    run made 20% slower once said "found no slowdown" and passed, --require-baseline too."""
    slow = scaled(load_results(H100_RUN), 1.2, tmp_path / "slow.json").path
    args = ["compare", str(slow), "--baselines-dir", str(ROOT / "baselines"), "--format", "json"]
    assert main([*args, "--require-baseline"]) == 1
    document = json.loads(capsys.readouterr().out)
    cannot = [v for v in document["verdicts"] if v["reason"].startswith("one process cannot be judged")]
    assert len(cannot) == 30 and all(v["status"] == "inconclusive" and v["processes"] == [1, 1] for v in cannot)
    assert all("with 1/1 processes (new/baseline)" in v["reason"] for v in cannot)
    assert document[
        "failed"
    ] and "30 of 30 configurations cannot be judged (too few processes a side for the exact test to reach alpha" in (
        " ".join(document["problems"])
    )
    assert main(args) == 0  # without --require-baseline it does not fail, but says so in its last line
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert "could not judge 30 of 30 (30 with too few processes a side)" in summary


def test_an_update_the_gate_could_not_judge_against_is_refused_and_writes_nothing(tmp_path: Path, capsys):
    directory = tmp_path / "bl"
    config = ["--gate-config", str(ROOT / "baselines" / "gate.toml")]
    assert main(["baseline", "update", str(H100_RUN), "--baselines-dir", str(directory), *config]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"zvperf baseline: error: {directory / 'nvidia-h100-80gb-hbm3.json'} was not updated: ")
    assert "could not judge 30 of 30 benchmarks against it" in error and "pooled from one run" in error
    assert not (directory / "nvidia-h100-80gb-hbm3.json").exists()
    # Three judged processes reach p < 0.01 against seven (1/120), not six (1/84).
    six = write_processes(tmp_path / "six.json", [bench("a-1step", spread_rounds(0.1, n=3))], 6)
    assert main(["baseline", "update", *(str(r.path) for r in six), "--baselines-dir", str(directory)]) == 2
    assert "pooled from 6 runs" in capsys.readouterr().err
    seven = write_processes(tmp_path / "seven.json", [bench("a-1step", spread_rounds(0.1, n=3))], 7)
    assert main(["baseline", "update", *(str(r.path) for r in seven), "--baselines-dir", str(directory)]) == 0
    one = write_results(tmp_path / "one.json", [bench(n, spread_rounds(0.1, n=3)) for n in ("a-1step", "b-1step")])
    assert main(["baseline", "update", str(one.path), "--baselines-dir", str(directory)]) == 2
    assert "could not judge 2 of 2 benchmarks" in capsys.readouterr().err
    stored = baselines.read(directory / f"{KEY}.json")
    assert stored is not None and stored.entries["a-1step solver"].runs == 7  # the refused update left it
