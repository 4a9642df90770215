"""The gate's figures besides time: peak memory and GPU energy per second of audio, judged on a plain threshold when
gate.toml sets one, stored per run in the baselines, said (not failed) where a side has none."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.gate_data import KEY, STORED, bench, spread_rounds, write_processes, write_results
from zvperf.cli import main
from zvperf.errors import ZvperfError
from zvperf.gate import baselines, judge, stats
from zvperf.gate.config import GateConfig, Rule, load_config
from zvperf.gate.confirm import confirmed, to_confirm
from zvperf.results.schema import ResultsFile

ID = "zipvoice_distill-4step-torch-fp32"
GPU = "nvidia-h100-80gb-hbm3"
NOT_CUDA = {"available": False, "reason": "not a CUDA run"}


def cpu(rss_mib: float) -> dict[str, Any]:
    """A CPU benchmark's extra_info: its peak resident memory, no GPU."""
    return {"device": "cpu", "telemetry": {"cpu": {"rss_mib_peak": rss_mib}, "gpu": NOT_CUDA}}


def gpu(joules_per_audio_second: float | None, allocated_mib: float = 900.0, throttled: bool = False) -> dict:
    """A GPU benchmark's extra_info as zvperf.suite.telemetry writes it: torch's peak allocation, NVML's energy."""
    nvml = {
        "available": True,
        "sm_clock_mhz_median": 1980.0,
        "temperature_c_max": 61.0,
        "throttled": throttled,
        "clock_event_reasons": ["hw_thermal_slowdown"] if throttled else [],
        "joules_per_audio_second": joules_per_audio_second,
        "unavailable": {} if joules_per_audio_second else {"energy": "the energy counter did not advance"},
    }
    telemetry = {"cpu": {"rss_mib_peak": 3000.0}, "gpu": nvml, "torch_peak_allocated_mib": allocated_mib}
    return {"device": "cuda", "telemetry": telemetry}


def stored(tmp_path: Path, extras: list[dict], key: str = "cpu-test-2c", kind: str = "solver") -> Path:
    """A baseline folder whose entry for ID pools one run per extra_info of ``extras``, each 0.2% slower than the
    last, as processes differ."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    runs = [
        write_results(
            tmp_path / f"base{i}.json", [bench(ID, spread_rounds(0.1 * (1 + 0.002 * i)), kind, **extra)], key=key
        )
        for i, extra in enumerate(extras)
    ]
    baselines.update(tmp_path / "bl", *runs)
    return tmp_path / "bl"


def run(tmp_path: Path, extra: dict, key: str = "cpu-test-2c", name: str = "new.json", **more) -> list[ResultsFile]:
    """The gate matrix's judged processes, each with the figures of ``extra``."""
    return write_processes(tmp_path / name, [bench(ID, spread_rounds(0.1), **extra, **more)], key=key)


def paths(runs: list[ResultsFile]) -> list[str]:
    return [str(each.path) for each in runs]


def config(tmp_path: Path, text: str) -> GateConfig:
    (tmp_path / "gate.toml").write_text(text)
    return load_config(tmp_path / "gate.toml", tmp_path)


def test_a_baseline_keeps_each_runs_figures_and_its_reference_is_their_median(tmp_path: Path):
    directory = stored(tmp_path, [cpu(1000.0), cpu(1040.0), cpu(990.0)])
    document = json.loads((directory / "cpu-test-2c.json").read_text())
    assert document["format"] == baselines.BASELINE_FORMAT == 6
    assert document["benchmarks"][f"{ID} solver"]["per_run"] == {"peak_memory_mib": [1000.0, 1040.0, 990.0]}
    (verdict,) = judge.compare(run(tmp_path, cpu(1100.0)), directory, GateConfig(Rule(memory_threshold=0.05))).verdicts
    (memory,) = verdict.metrics
    assert (memory.value, memory.reference, memory.runs) == (1100.0, 1000.0, (3, 3))  # median of 1000, 1040, 990


def test_a_memory_regression_fails_with_the_setting_on_and_passes_with_it_off(tmp_path: Path, capsys):
    directory = stored(tmp_path, [cpu(1000.0), cpu(1010.0), cpu(990.0)])
    bigger = run(tmp_path, cpu(1250.0))
    off = judge.compare(bigger, directory, GateConfig())  # the default: memory is not judged
    assert not off.failed and off.verdicts[0].metrics == []
    # Three stored processes against three: the exact test cannot judge the time, the figure is judged all the same.
    assert off.summary() == (
        "gate found no slowdown, but could not judge 1 of 1 (1 with too few processes a side): judged 0 of 1 "
        "configurations (0 slower, 0 improved, 0 passed); not judged: 1 inconclusive"
    )
    on = judge.compare(bigger, directory, config(tmp_path, "memory_threshold = 0.10\n"))
    assert on.failed
    (verdict,) = on.verdicts
    assert verdict.status == judge.INCONCLUSIVE and verdict.failing  # no slower that can be told, but bigger
    assert verdict.lines()[1] == (
        f"FAIL          {ID} solver: peak memory 1250 MiB vs baseline 1000 MiB (+25.0%, threshold 10%, runs=3/3)"
    )
    assert on.summary() == (
        "gate FAILED: judged 0 of 1 configurations (0 slower, 0 improved, 0 passed); not judged: 1 inconclusive; "
        "peak memory: 1 over the threshold"
    )
    assert "when peak memory is more than 10% above the baseline's median (one figure per run: no test)" in on.header()
    # Within the threshold: a pass, said; an override per benchmark id pattern, like the time rule's.
    assert judge.compare(run(tmp_path, cpu(1080.0), name="ok.json"), directory, on.config).verdicts[0].lines()[1] == (
        f"pass          {ID} solver: peak memory 1080 MiB vs baseline 1000 MiB (+8.0%, threshold 10%, runs=3/3)"
    )
    loose = config(tmp_path, 'memory_threshold = 0.10\n[override."zipvoice_distill-*"]\nmemory_threshold = 0.5\n')
    assert not judge.compare(bigger, directory, loose).failed
    off_again = config(tmp_path, 'memory_threshold = 0.10\n[override."* solver"]\nmemory_threshold = false\n')
    assert off_again.rule(f"{ID} solver", KEY).memory_threshold is None
    assert not judge.compare(bigger, directory, off_again).failed
    args = [
        "compare",
        *paths(bigger),
        "--baselines-dir",
        str(directory),
        "--gate-config",
        str(tmp_path / "gate.toml"),
    ]
    config(tmp_path, "memory_threshold = 0.10\n")
    assert main(args) == 1
    assert f"FAIL          {ID} solver: peak memory 1250 MiB" in capsys.readouterr().out


def test_an_energy_regression_on_a_gpu_fails_with_the_setting_on_and_passes_with_it_off(tmp_path: Path):
    directory = stored(tmp_path, [gpu(4.0), gpu(4.1), gpu(3.9)], key=GPU)
    hungrier = run(tmp_path, gpu(5.0), key=GPU)
    assert not judge.compare(hungrier, directory, GateConfig()).failed
    on = judge.compare(hungrier, directory, config(tmp_path, "energy_threshold = 0.15\nmemory_threshold = 0.1\n"))
    assert on.failed
    (verdict,) = on.verdicts
    memory, energy = verdict.metrics
    assert memory.status == judge.PASS and memory.value == 900.0  # torch's allocation on a GPU, not the host's RSS
    assert energy.status == judge.FAIL and energy.change == pytest.approx(0.25)
    assert verdict.lines()[2] == (
        f"FAIL          {ID} solver: energy per audio second 5.00 J vs baseline 4.00 J "
        "(+25.0%, threshold 15%, runs=3/3)"
    )
    assert on.summary().endswith("; peak memory: 1 within; energy per audio second: 1 over the threshold")
    # A throttled GPU changes the energy as it does the time: inconclusive, not failed.
    throttled = judge.compare(run(tmp_path, gpu(5.0, throttled=True), key=GPU, name="hot.json"), directory, on.config)
    energy = throttled.verdicts[0].metrics[1]
    assert (energy.status, energy.reason) == (judge.INCONCLUSIVE, "the GPU throttled during the run")
    assert not throttled.failed


def test_missing_figures_are_said_not_failed(tmp_path: Path):
    both = config(tmp_path, "memory_threshold = 0.1\nenergy_threshold = 0.1\n")
    # A CPU run has no energy figure, nor its baseline.
    directory = stored(tmp_path / "cpu", [cpu(1000.0)])
    report = judge.compare(run(tmp_path, cpu(1000.0)), directory, both)
    assert not report.failed
    energy = report.verdicts[0].metrics[1]
    assert energy.status == judge.NO_FIGURE
    assert report.verdicts[0].lines()[2] == (
        f"no figure     {ID} solver: energy per audio second: neither the run nor the baseline has one (not a CUDA run)"
    )
    assert report.summary().endswith("; peak memory: 1 within; energy per audio second: 1 without a figure")
    # A GPU run whose energy counter did not advance, against a baseline that has a figure.
    directory = stored(tmp_path / "gpu", [gpu(4.0)], key=GPU)
    (verdict,) = judge.compare(run(tmp_path, gpu(None), key=GPU, name="g.json"), directory, both).verdicts
    assert verdict.metrics[1].reason == "the run has none (the energy counter did not advance)"
    # A GPU row whose backend allocates outside torch, without NVML's process figure: no memory figure, not the
    # host's resident memory in its place.
    no_nvml = gpu(4.0)
    del no_nvml["telemetry"]["torch_peak_allocated_mib"]
    (verdict,) = judge.compare(run(tmp_path, no_nvml, key=GPU, name="n.json"), directory, both).verdicts
    assert verdict.metrics[0].status == judge.NO_FIGURE and not verdict.failing
    assert "neither torch's allocator nor NVML's per-process reading gave a GPU figure" in verdict.metrics[0].reason


def test_a_baseline_without_the_figures_still_loads_and_its_verdict_says_the_figure_is_missing(tmp_path: Path):
    """A baseline file of format 2 (before per-run figures were kept), as the committed CPU baseline was."""
    directory = stored(tmp_path, [cpu(1000.0)])
    path = directory / "cpu-test-2c.json"
    document = json.loads(path.read_text())
    document["format"] = 2
    for entry in document["benchmarks"].values():
        del entry["per_run"]
    path.write_text(json.dumps(document))
    old = baselines.read(path)
    assert old is not None and old.entries[f"{ID} solver"].per_run == {}
    report = judge.compare(run(tmp_path, cpu(5000.0)), directory, config(tmp_path, "memory_threshold = 0.1\n"))
    assert not report.failed
    (memory,) = report.verdicts[0].metrics
    assert (memory.status, memory.runs) == (judge.NO_FIGURE, (3, 0))
    assert memory.reason == "the baseline has none (its runs measured none, or it was stored before zvperf kept them)"
    # The next update writes the current format, and the entry it replaces keeps what it had (no figures).
    baselines.update(directory, *run(tmp_path, cpu(1100.0), name="next.json"))
    again = json.loads(path.read_text())
    entry = again["benchmarks"][f"{ID} solver"]
    assert again["format"] == baselines.BASELINE_FORMAT and entry["per_run"] == {"peak_memory_mib": [1100.0] * 3}
    assert entry["previous"]["per_run"] == {}
    # The committed CPU baseline, of format 2, loads.
    committed = baselines.read(Path(__file__).parents[1] / "baselines" / "cpu-amd-epyc-f25m1-avx2-2c.json")
    assert committed is not None and committed.entries


def test_malformed_per_run_figures_name_the_file_and_the_entry(tmp_path: Path):
    directory = stored(tmp_path, [cpu(1000.0)])
    path = directory / "cpu-test-2c.json"
    document = json.loads(path.read_text())
    document["benchmarks"][f"{ID} solver"]["per_run"] = {"peak_memory_mib": ["big"]}
    path.write_text(json.dumps(document))
    with pytest.raises(ZvperfError) as error:
        baselines.read(path)
    assert str(error.value) == (
        f"baseline file {path}: entry '{ID} solver' is malformed ('per_run' is not an object of lists of "
        "non-negative figures): fix it or restore it from git; it was not changed."
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('memory_threshold = "big"', "memory_threshold must be a number or false (off), got 'big'."),
        ("energy_threshold = 0", "energy_threshold must be above 0 (or false: off), got 0.0."),
        ("energy_threshold = true", "energy_threshold must be a number or false (off), got True."),
        ('[override."* e2e"]\nmemory_threshold = -0.1', "memory_threshold must be above 0 (or false: off), got -0.1."),
        ("threshold = false", "threshold must be a number, got False."),  # only a figure's threshold can be off
        ("memory = 0.1", "unknown setting 'memory' (known: threshold, alpha, max_spread, memory_threshold, "),
    ],
)
def test_bad_figure_settings_are_one_sentence_naming_the_file(tmp_path: Path, text: str, problem: str):
    path = tmp_path / "gate.toml"
    path.write_text(text)
    with pytest.raises(ZvperfError, match=re.escape(problem)) as error:
        load_config(path, tmp_path)
    message = str(error.value)
    assert message.startswith(f"gate config {path}") and message.count(". ") == 0 and message.endswith(".")


def test_cold_starts_memory_is_not_judged(tmp_path: Path):
    """A cold start's memory figure is its parent process's, while the cold process runs: not the start's."""
    directory = stored(tmp_path, [cpu(1000.0)], kind="cold_start")
    stored_entry = json.loads((directory / "cpu-test-2c.json").read_text())["benchmarks"][f"{ID} cold_start"]
    assert stored_entry["per_run"] == {}
    new = write_results(tmp_path / "c.json", [bench(ID, spread_rounds(0.1), "cold_start", **cpu(9000.0))])
    (verdict,) = judge.compare(new, directory, GateConfig(Rule(memory_threshold=0.1))).verdicts
    assert verdict.metrics == []


def test_figures_have_no_p_value_and_stay_out_of_the_benjamini_hochberg_adjustment(tmp_path: Path):
    old = [2.95, 2.98, 3.00, 3.02, 3.05, 3.08, 3.34]
    new = [3.31, 3.32, 3.33, 3.61, 3.62, 3.63, 3.64]
    names = ["a-1step", "b-1step"]
    baselines.update(
        tmp_path / "bl", *write_processes(tmp_path / "o.json", [bench(n, old, **cpu(1000.0)) for n in names], STORED)
    )
    results = write_processes(tmp_path / "n.json", [bench(n, new, **cpu(2000.0)) for n in names])
    report = judge.compare(results, tmp_path / "bl", GateConfig(Rule(memory_threshold=0.1)))
    without = judge.compare(results, tmp_path / "bl", GateConfig())
    # Adjusted over the two time tests alone, as with the figures off: both still significant.
    assert [v.p_adjusted for v in report.verdicts] == [v.p_adjusted for v in without.verdicts]
    assert [v.p_adjusted for v in report.verdicts] == pytest.approx(
        stats.benjamini_hochberg([v.p for v in without.verdicts])
    )
    assert [v.status for v in report.verdicts] == [judge.FAIL, judge.FAIL]
    document = report.verdicts[0].to_json()
    (memory,) = document["metrics"]
    assert memory == {
        "metric": "peak memory",
        "unit": "MiB",
        "decimals": 0,
        "status": "fail",
        "label": "FAIL",
        "threshold": 0.1,
        "value": 2000.0,
        "reference": 1000.0,
        "change": 1.0,
        "runs": (3, STORED),
        "reason": "",
    }
    assert "p" not in memory and document["failing"]


def test_markdown_and_json_reports_list_the_figures(tmp_path: Path, capsys):
    directory = stored(tmp_path, [gpu(4.0)] * 2, key=GPU)
    results = run(tmp_path, gpu(5.0, allocated_mib=950.0), key=GPU)
    config(tmp_path, "memory_threshold = 0.1\nenergy_threshold = 0.1\n")
    args = [
        "compare",
        *paths(results),
        "--baselines-dir",
        str(directory),
        "--gate-config",
        str(tmp_path / "gate.toml"),
    ]
    assert main([*args, "--format", "md"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert "#### Peak memory and energy per audio second" in lines
    assert "| benchmark | figure | value | reference | change | threshold | runs | verdict |" in lines
    assert f"| `{ID} solver` | peak memory | 950 MiB | 900 MiB (baseline) | +5.6% | 10% | 3/2 | pass |" in lines
    assert (
        f"| `{ID} solver` | energy per audio second | 5.00 J | 4.00 J (baseline) | +25.0% | 10% | 3/2 | **FAIL** |"
    ) in lines
    assert main([*args, "--format", "json"]) == 1
    document = json.loads(capsys.readouterr().out)
    (verdict,) = document["verdicts"]
    assert document["failed"] and verdict["status"] == "inconclusive" and verdict["failing"]  # 3 against 2
    assert [(m["metric"], m["status"]) for m in verdict["metrics"]] == [
        ("peak memory", "pass"),
        ("energy per audio second", "fail"),
    ]


def _processes(tmp_path: Path, side: str, rss_mib: float) -> list[ResultsFile]:
    """Three processes of one side: the same time (no two rounds tie), ``rss_mib`` of peak memory give or take."""
    offset = 0.001 if side == "head" else 0.0
    return [
        write_results(
            tmp_path / f"{side}-{i}.json",
            [bench(ID, spread_rounds(0.1 * (1 + offset + 0.002 * i)), **cpu(rss_mib + 5 * i))],
        )
        for i in range(3)
    ]


def test_a_figure_over_its_threshold_is_confirmed_a_b_like_a_slowdown(tmp_path: Path):
    """A baseline taken in a process that had run the whole matrix before (or under another driver) differs in memory
    from the A/B processes; the same-job processes of both commits decide."""
    directory = stored(tmp_path, [cpu(800.0)] * 3)
    report = judge.compare(run(tmp_path, cpu(1000.0)), directory, GateConfig(Rule(memory_threshold=0.1)))
    assert report.failed and [v.id for v in to_confirm(report)] == [f"{ID} solver"]  # time passed, memory did not
    ids = [f"{ID} solver"]
    same = confirmed(report, _processes(tmp_path, "base", 1000.0), _processes(tmp_path, "head", 1000.0), ids)
    (verdict,) = same.verdicts
    assert not same.failed and verdict.metrics[0].status == judge.PASS
    assert verdict.lines()[1] == (
        f"pass          {ID} solver: peak memory 1005 MiB vs base abc123 1005 MiB (+0.0%, threshold 10%, runs=3/3)"
    )
    assert verdict.confirmed.endswith(
        "against the stored baseline it was inconclusive (+0.0%), peak memory fail (+25.0%)"
    )
    bigger = confirmed(report, _processes(tmp_path, "base", 1000.0), _processes(tmp_path, "head", 1300.0), ids)
    assert bigger.failed and bigger.verdicts[0].metrics[0].change == pytest.approx(0.3, abs=0.01)
