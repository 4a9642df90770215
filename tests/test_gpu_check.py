"""The prepared GPU check on a machine without a GPU: it stops at the first step that needs one, saying so, and
its machinery (time limits, reading pytest's output, results, verdicts, report) works."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import CASE_DIRS, CONFORMANCE, DATA, WAIT_S, running, spawning_code
from zvperf import processes
from zvperf.cli import gpu_check, main

pytestmark = pytest.mark.processes

ROOT = Path(__file__).parents[1]


def check(
    tmp_path: Path, budget: float = 300.0, compile_budget: float = 100.0, gate_calibration: bool = False
) -> gpu_check.Check:
    args = argparse.Namespace(
        budget=budget,
        compile_budget=compile_budget,
        baselines_dir=ROOT / "baselines",
        cases=CONFORMANCE,
        weights="synthetic",
        rounds=2,
        backends=gpu_check.GPU_BACKENDS,
        gate_calibration=gate_calibration,
    )
    return gpu_check.Check(tmp_path / "out", time.monotonic() + budget, args)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_without_a_gpu_it_says_so_and_stops_at_its_first_step(tmp_path):
    out = tmp_path / "out"
    completed = subprocess.run(
        [sys.executable, "-m", "zvperf", "gpu-check", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=WAIT_S,  # bounds a hang only
    )
    assert completed.returncode == gpu_check.NO_GPU_EXIT
    assert "[gpu] failed: no CUDA GPU: torch.cuda.is_available() is False" in completed.stdout
    assert "torch: 2.11" in completed.stdout and "onnxruntime_providers:" in completed.stdout  # versions first
    summary = json.loads((out / "summary.json").read_text())
    assert summary["exit_status"] == gpu_check.NO_GPU_EXIT
    assert [(s["name"], s["status"]) for s in summary["steps"]] == [("gpu", "failed")]
    assert "no CUDA GPU" in (out / "gpu-check.md").read_text()


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads process states from /proc (Linux)")
def test_a_step_past_its_limit_is_stopped_with_everything_it_started(tmp_path, monkeypatch):
    """A hanging build (here a child that started a grandchild) is one timed-out step; nothing of it lives on when
    the step is reported. The child must have started its grandchild before the limit for this to prove anything:
    on a loaded machine Python can take longer than the limit to start, so the limit doubles until it has (a
    bound of five tries: 3 s to 48 s)."""
    monkeypatch.setattr(gpu_check, "MIN_STEP_S", 0.1)
    grandchild = tmp_path / "grandchild.pid"
    runner = check(tmp_path)
    for limit in (3.0, 6.0, 12.0, 24.0, 48.0):
        step = runner._execute(gpu_check.Step("hang", command=[sys.executable, "-c", spawning_code(grandchild)]), limit)
        assert step.status == "timed out" and step.detail == f"stopped after its limit of {limit:.0f} s"
        assert limit <= step.seconds < limit + processes.GONE_WAIT_S
        if grandchild.is_file():
            break
    assert not running(int(grandchild.read_text()))


def test_steps_beyond_the_budget_are_not_run_and_fail_the_check(tmp_path):
    runner = check(tmp_path, budget=0)
    step = runner._execute(gpu_check.Step("late", command=[sys.executable, "-c", "pass"]), runner._time_for(60))
    assert step.status == "not run" and "time budget was spent" in step.detail


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_a_benchmark_step_reports_what_pytest_skipped_and_why(tmp_path):
    """The guide step on a CPU machine: every benchmark skips, so the step failed and says why; its JSON records
    what was not measured and why, for the gate."""
    runner = check(tmp_path)
    runner.work = tmp_path
    results = runner._guide()
    assert results is not None
    unmeasured = json.loads(results.read_text())["zvperf"]["unmeasured"]
    assert unmeasured and {u["outcome"] for u in unmeasured.values()} == {"skipped"}
    assert all("no CUDA device is available" in u["reason"] for u in unmeasured.values())
    (step,) = runner.steps
    assert step.status == "failed"
    assert "skipped" in step.detail and "no CUDA device is available" in step.detail
    assert step.tests and set(step.tests.values()) == {"SKIPPED"}
    assert any(test.startswith("test_solver[zipvoice-16step-torch-fp16") for test in step.tests)


def test_results_are_merged_judged_and_reported(tmp_path):
    runner = check(tmp_path)
    runner.output.mkdir(parents=True)
    results = runner._merge([DATA / "report" / "gpu.json"])
    assert results == runner.output / "results.json"
    runner._gate(results)
    runner._report(results)
    gate, report = runner.steps[1:]
    assert gate.status == "ok" and "no baseline" in gate.detail
    assert report.status == "ok" and (runner.output / "report.en.md").is_file()
    assert runner._finish(time.monotonic(), 0) == 0
    markdown = (runner.output / "gpu-check.md").read_text()
    assert "| gate | ok |" in markdown and "report.en.md" in markdown


def test_conformance_verdicts_are_read_from_zvperf_conforms_output(capsys):
    assert main(["conform", str(CASE_DIRS[0])]) == 0
    found = gpu_check.CONFORM_LINE.findall(capsys.readouterr().out)
    assert [name for name, *_ in found] == ["text_condition", "fm_velocity", "x1"]
    assert all(verdict == "ok" for *_, verdict in found)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_every_gpu_backend_and_precision_gets_a_conformance_step(tmp_path):
    runner = check(tmp_path)
    runner._conformance()
    names = [step.name for step in runner.steps]
    assert len(names) == 24 and "conform ort-trt fp16" in names and "conform compile-graph bf16" in names
    assert {"conform fused fp16", "conform fused-graph bf16"} <= set(names)
    assert "conform trt bf16" not in names  # what a backend does not have is not asked of it
    assert all(step.status == "skipped" and "no CUDA device" in step.detail for step in runner.steps)


def test_a_step_stopped_before_pytest_benchmark_saved_adds_no_results_and_says_so(tmp_path):
    """pytest-benchmark opens its JSON file at the start: a step killed at its limit leaves it empty."""
    runner = check(tmp_path)
    runner.work = tmp_path
    step = gpu_check.Step("suite compile")
    empty = tmp_path / "suite-compile.json"

    def stopped(step: gpu_check.Step, limit: float) -> gpu_check.Step:
        empty.touch()
        step.status, step.detail = "timed out", "stopped after its limit of 1 s"
        return step

    runner._execute = stopped  # type: ignore[method-assign]
    assert runner._pytest(step, [], 1.0, []) is None
    assert step.status == "timed out" and "no results written" in step.detail


def test_a_failure_of_the_check_itself_is_a_failed_step_and_the_summary_is_still_written(tmp_path, monkeypatch):
    runner = check(tmp_path)
    runner.output.mkdir(parents=True)
    monkeypatch.setattr(gpu_check, "environment", lambda: {"gpus": ["a GPU"]})

    def broken() -> None:
        raise KeyError("benchmarks")

    runner._steps = broken  # type: ignore[method-assign]
    assert runner.run() == 1
    summary = json.loads((runner.output / "summary.json").read_text())
    assert summary["steps"][-1] == {
        "name": "check",
        "status": "failed",
        "seconds": 0.0,
        "detail": "the check stopped: KeyError: 'benchmarks'",
        "command": [],
        "tests": {},
    }


def test_backends_restrict_the_check_and_an_unknown_one_is_a_usage_error(tmp_path, capsys):
    runner = check(tmp_path)
    runner.args.backends = gpu_check.backend_list("cudagraph,torch")
    assert runner.args.backends == ("torch", "cudagraph")
    runner._conformance()
    assert [step.name for step in runner.steps] == [
        f"conform {b} {p}" for b in ("torch", "cudagraph") for p in gpu_check.PRECISIONS
    ]
    assert main(["gpu-check", str(tmp_path / "out"), "--backends", "torch,tpu"]) == 2
    assert "'torch,tpu' is not a comma-separated list of GPU backends" in capsys.readouterr().err


def test_the_compile_steps_run_last_within_their_own_share_of_the_budget(tmp_path, monkeypatch):
    """Steps that each run to their limit cannot spend compile's share: compile's cold and warm start still get all
    of it, then its solver rows in fp16."""
    clock = [0.0]
    monkeypatch.setattr(gpu_check.time, "monotonic", lambda: clock[0])
    runner = check(tmp_path, budget=300.0, compile_budget=100.0)
    runner.deadline = 300.0
    limits: dict[str, float] = {}

    def execute(step, limit, ok_codes=(0,)):  # every step runs until its limit
        limits[step.name] = limit
        clock[0] += limit
        step.status = "timed out"
        return step

    monkeypatch.setattr(runner, "_execute", execute)
    monkeypatch.setattr(runner, "_conformance", lambda: None)
    monkeypatch.setattr(gpu_check, "_plugin_installed", lambda: True)
    monkeypatch.setattr("zvperf.backends.check_runnable", lambda backend, device, precision: None)
    runner._steps()
    names = list(limits)
    assert names[-3:] == ["compile start fp16", "suite compile", "suite compile-graph"]
    assert sum(limits[name] for name in names[:-3]) == 300.0 - gpu_check.FINISH_S - 100.0  # the others' time
    assert limits["compile start fp16"] == 100.0  # compile's share, whole, after they spent theirs
    assert "--zv-precision=fp16" in next(s for s in runner.steps if s.name == "suite compile").command
    # The cold and warm start step selects compile's one cold-start benchmark (collected here: nothing runs).
    start = next(s for s in runner.steps if s.name == "compile start fp16").command
    collect = [*start, "--collect-only"]
    collected = subprocess.run(collect, capture_output=True, text=True, cwd=ROOT, check=False, timeout=WAIT_S)
    functions = [line.strip() for line in collected.stdout.splitlines() if line.strip().startswith("<Function")]
    assert functions == ["<Function test_cold_start[zipvoice_distill-compile-fp16]>"], collected.stdout[-2000:]


CALIBRATED = """run 1/1, injected 0%: zipvoice-16step-cudagraph-fp16-1800f solver pass (+0.4%)
run 1/1, injected 10%: zipvoice-16step-cudagraph-fp16-1800f solver fail (+10.2%)
injected  runs  rows  judged  fail  inconclusive  pass  improved  rate
--------  ----  ----  ------  ----  ------------  ----  --------  -------------------------
      0%     1     1       1     0             0     1         0  false alarms 0% (0/1 runs)
     10%     1     1       1     1             0     0         0  detected 100% (1/1 rows)
detected per row (failed / judged, per injected slowdown):
"""


def test_the_gate_calibration_records_the_gpus_gate_baseline_and_calibrates_it_in_the_whole_budget(
    tmp_path, monkeypatch
):
    """--gate-calibration runs one step, zvperf calibrate of the gate matrix on CUDA, with every second of the
    budget but the finish; its baseline is copied where baselines/ takes it, its table kept."""
    from zvperf.cli import build_parser
    from zvperf.suite.machine import hardware_key

    clock = [0.0]
    monkeypatch.setattr(gpu_check.time, "monotonic", lambda: clock[0])
    runner = check(tmp_path, budget=570.0, gate_calibration=True)
    runner.deadline = 570.0
    runner.output.mkdir(parents=True)
    limits = []
    key = hardware_key("cuda")

    def execute(step, limit, ok_codes=(0,)):  # what calibrate leaves behind when it finishes
        limits.append(limit)
        kept = Path(step.command[step.command.index("--") - 1].removeprefix("--keep="))
        (kept / "baselines-1").mkdir(parents=True)
        (kept / "baselines-1" / f"{key}.json").write_text("{}")
        step.status, step.output = "ok", CALIBRATED
        return step

    monkeypatch.setattr(runner, "_execute", execute)
    monkeypatch.setattr(runner, "_conformance", lambda: pytest.fail("only the calibration runs"))
    runner._steps()
    (step,) = runner.steps
    assert limits == [570.0 - gpu_check.FINISH_S]
    assert step.command[3:7] == ["calibrate", "--matrix=gate", "--device=cuda", "--runs=1"]
    assert "--baseline-runs=7" in step.command and "--slowdowns=0.1" in step.command
    assert step.command[-2:] == ["--", "--zv-weights=synthetic"]
    args = build_parser(step.command[3:]).parse_args(step.command[3 : step.command.index("--")])
    assert (args.matrix, args.device, args.runs, args.baseline_runs, args.slowdowns) == ("gate", "cuda", 1, 7, [0.1])
    assert (runner.output / "baselines" / f"{key}.json").read_text() == "{}"
    assert (runner.output / "gate-calibration.txt").read_text() == CALIBRATED
    assert step.detail == (
        f"baselines/{key}.json written; 0%     1     1       1     0             0     1         0  false alarms 0% "
        "(0/1 runs); 10%     1     1       1     1             0     0         0  detected 100% (1/1 rows)"
    )
    # A calibration that wrote no baseline fails the step, saying where it looked.
    failed = check(tmp_path / "again", budget=570.0, gate_calibration=True)
    failed.output.mkdir(parents=True)

    def nothing_kept(step, limit, ok_codes=(0,)):
        step.status = "ok"
        return step

    monkeypatch.setattr(failed, "_execute", nothing_kept)
    failed._steps()
    assert failed.steps[0].status == "failed" and not (failed.output / "baselines").exists()
    assert failed.steps[0].detail.startswith("the calibration wrote no baseline at ")
