"""``zvperf gpu-check OUTPUT_DIR``: everything that can break on a GPU, tried once, in a few minutes.

It prints the versions and the ONNX Runtime providers found, runs ``zvperf conform`` on the bundled cases
through every GPU backend in every precision it has, times the solver of zipvoice_distill (4 steps) and
zipvoice (16 steps) at 1800 frames through every backend with few rounds, and the guide matrix for torch
fp16, and writes the merged results JSON, the gate's verdicts against ``baselines/`` and an English report
into OUTPUT_DIR. Every step runs in its own process under a time limit, inside an overall budget, so a
build that hangs is one failed step, with its reason, and the run still shows everything else that breaks.
A backend that cannot run here (no onnxruntime-gpu, no tensorrt) is a skipped step that says why.

With ``--gate-calibration`` it runs one step instead, which needs a device session of its own: the gate matrix's
baseline recorded on this GPU (``GATE_BASELINE_PROCESSES`` processes, the fewest the gate's three judged ones can
be judged against) and one repetition of its calibration at 0% and 10% (``zvperf calibrate --matrix gate``), the
baseline written to OUTPUT_DIR/baselines/<hardware key>.json for ``baselines/``, the calibration's table to
OUTPUT_DIR/gate-calibration.txt and every process's results to OUTPUT_DIR/gate-calibration/.

Exit status: 0 when every step that ran passed, 1 when one failed or ran out of time, 3 when there is no
CUDA GPU (it stops at the first step that needs one).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zvperf.errors import ZvperfError
from zvperf.files import write_atomic
from zvperf.gate.config import Rule
from zvperf.gate.stats import JUDGED_PROCESSES, processes_needed
from zvperf.processes import not_stopped, stop_group

NO_GPU_EXIT = 3
GPU_BACKENDS = (
    "torch", "compile", "compile-graph", "cudagraph", "fused", "fused-graph", "ort-cuda", "ort-trt", "trt",
)  # fmt: skip
COMPILE_BACKENDS = ("compile", "compile-graph")
PRECISIONS = ("fp32", "fp16", "bf16")
FRAMES = 1800
# zipvoice_distill at 4 steps and zipvoice at 16 (-k keeps those two of the four model x step pairs).
SOLVER_ROWS = "solver and (zipvoice_distill-4step or zipvoice-16step)"
# Seconds each step may take at most (less when the budget runs low). The quick backends run first, those
# that compile or build engines of the full-size model last. The default budget leaves half a minute of
# 8 minutes for installing.
BUDGET_S = 450
CONFORM_PHASE_S = 120  # all conformance processes together
SUITE_LIMIT_S = {
    "torch": 75, "cudagraph": 75, "fused": 75, "fused-graph": 75, "ort-cuda": 75,
    "compile": 150, "compile-graph": 150, "trt": 150, "ort-trt": 150,
}  # fmt: skip
# Compile's own share of the budget, kept from the steps before it: compile's cold and warm start (a fresh process
# with empty caches, then one with what it kept), then its solver rows, which find the kernels in the machine's
# zvperf cache (zvperf.backends.compile_cache) once any run has compiled them.
COMPILE_BUDGET_S = 150
COMPILE_START = "test_cold_start and zipvoice_distill-compile-fp16"  # one model, one graph, cold and warm
GUIDE_LIMIT_S = 120
FINISH_S = 30  # kept back for the gate, the report and the summary
# The gate calibration's processes: the baseline's (the fewest the gate's three judged ones reach alpha against:
# seven), then three unchanged and three 10% slower judged against it. Thirteen on an H100 take about 9 minutes
# (26.2 s to start and build, 16 s of captured rows: docs/gpu-check.md).
GATE_BASELINE_PROCESSES = processes_needed(JUDGED_PROCESSES, Rule().alpha)
GATE_SLOWDOWN = 0.1
RATE_LINE = re.compile(r"(false alarms|detected) \d")  # zvperf calibrate's summary rows
MIN_STEP_S = 5  # a step with less time than this left is not started
CONFORM_WORKERS = 4  # conformance is correctness, not timing: its processes share the GPU
CONFORM_LINE = re.compile(r"^\s+(\w+)\s+max error (\S+)\s+tolerance (\S+)\s+(ok|FAIL)", re.M)  # zvperf conform's


@dataclasses.dataclass
class Step:
    """One step of the check and what became of it."""

    name: str
    status: str = "not run"  # ok, failed, timed out, skipped, not run
    seconds: float = 0.0
    detail: str = ""  # the reason, or what it found
    command: list[str] = dataclasses.field(default_factory=list)
    tests: dict[str, str] = dataclasses.field(default_factory=dict)  # pytest id -> PASSED/FAILED/SKIPPED/ERROR
    output: str = ""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("output", type=Path, metavar="OUTPUT_DIR", help="where the JSON, verdicts and report go")
    p.add_argument("--budget", type=float, default=BUDGET_S, help=f"seconds for the whole check (default: {BUDGET_S})")
    p.add_argument(
        "--compile-budget",
        type=float,
        default=COMPILE_BUDGET_S,
        help=f"seconds of the budget kept for the compile steps, which run last (default: {COMPILE_BUDGET_S})",
    )
    p.add_argument("--baselines-dir", type=Path, default=Path("baselines"), help="default: ./baselines")
    p.add_argument(
        "--cases",
        type=Path,
        default=Path("tests/data/conformance"),
        help="the conformance case folders (default: the bundled ones, ./tests/data/conformance)",
    )
    p.add_argument("--weights", default="auto", help="--zv-weights of the benchmark runs (default: auto)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per solver row (default: 3)")
    p.add_argument(
        "--gate-calibration",
        action="store_true",
        help=f"instead of the other steps: record the gate matrix's baseline on this GPU ({GATE_BASELINE_PROCESSES} "
        f"processes) and calibrate the gate on it at 0%% and {GATE_SLOWDOWN * 100:.0f}%% (about 9 minutes on an "
        "H100: give --budget 570)",
    )
    p.add_argument(
        "--backends",
        type=backend_list,
        default=GPU_BACKENDS,
        help=f"the GPU backends to check, comma-separated (default: all: {','.join(GPU_BACKENDS)}); the guide "
        "matrix runs with torch",
    )


def backend_list(value: str) -> tuple[str, ...]:
    """argparse type of --backends: GPU backends by name, in the check's own order."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in GPU_BACKENDS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a comma-separated list of GPU backends ({', '.join(GPU_BACKENDS)})"
        )
    return tuple(name for name in GPU_BACKENDS if name in names)


def run(args: argparse.Namespace) -> int:
    if not args.cases.is_dir():
        raise ZvperfError(f"--cases {args.cases}: no such folder (run the check from the repository root).")
    output: Path = args.output
    output.mkdir(parents=True, exist_ok=True)
    check = Check(output, time.monotonic() + args.budget, args)
    return check.run()


class Check:
    def __init__(self, output: Path, deadline: float, args: argparse.Namespace) -> None:
        self.output = output
        self.deadline = deadline
        self.args = args
        self.steps: list[Step] = []
        self.environment: dict[str, Any] = {}
        # IEEE fp32 everywhere, ONNX Runtime's TensorRT provider included (its only switch is this variable).
        self.env = {**os.environ, "NVIDIA_TF32_OVERRIDE": os.environ.get("NVIDIA_TF32_OVERRIDE", "0")}
        self.work = Path(tempfile.mkdtemp(prefix="zvperf-gpu-check-"))
        compiling = not args.gate_calibration and any(name in COMPILE_BACKENDS for name in args.backends)
        self.kept_for_compile = min(args.compile_budget, args.budget) if compiling else 0.0

    # -- the steps --------------------------------------------------------------------------------------
    def run(self) -> int:
        started = time.monotonic()
        self.environment = environment()
        for key, value in self.environment.items():
            self._say(f"{key}: {value}")
        gpu = self._gpu_step()
        if gpu.status != "ok":
            return self._finish(started, NO_GPU_EXIT)
        try:
            self._steps()
        except Exception as error:  # the check's own bug: recorded, and the summary and log still written
            self._add(Step("check", "failed", detail=f"the check stopped: {type(error).__name__}: {error}"))
            self._say(f"[check] failed: {self.steps[-1].detail}")
        failed = any(step.status in ("failed", "timed out", "not run") for step in self.steps)
        return self._finish(started, 1 if failed else 0)

    def _steps(self) -> None:
        if self.args.gate_calibration:
            self._gate_calibration()
            return
        backends = self.args.backends
        self._conformance()
        # The quick backends first, then those that compile or build engines of the full-size model.
        parts = [self._suite(b) for b in ("torch", "cudagraph", "fused", "fused-graph", "ort-cuda") if b in backends]
        parts += [self._guide()] if "torch" in backends else []
        parts += [self._suite(b) for b in ("trt", "ort-trt") if b in backends]
        self.kept_for_compile = 0.0  # the compile steps' own share, spent from here on
        parts += [self._compile_start()] if "compile" in backends else []
        parts += [self._suite(b, ("fp16",)) for b in COMPILE_BACKENDS if b in backends]
        results = self._merge([p for p in parts if p is not None])
        if results is not None:
            self._gate(results)
            self._report(results)

    def _gpu_step(self) -> Step:
        step = self._add(Step("gpu"))
        gpus = self.environment.get("gpus") or []
        if not gpus:
            step.status = "failed"
            step.detail = (
                "no CUDA GPU: torch.cuda.is_available() is False "
                f"({self.environment.get('cuda_unavailable_reason', 'no device')}); nothing that needs one was run"
            )
        else:
            step.status, step.detail = "ok", ", ".join(gpus)
        self._say(f"[gpu] {step.status}: {step.detail}")
        return step

    def _conformance(self) -> None:
        from zvperf.backends import BackendUnavailable, check_runnable, get_backend

        cases = sorted(str(p.resolve()) for p in self.args.cases.iterdir() if p.is_dir())
        jobs: list[Step] = []
        for name in self.args.backends:
            backend = get_backend(name)
            for precision in (p for p in PRECISIONS if p in backend.precisions):
                step = self._add(Step(f"conform {name} {precision}"))
                try:
                    check_runnable(backend, "cuda", precision)
                except BackendUnavailable as reason:
                    step.status, step.detail = "skipped", str(reason)
                    self._say(f"[{step.name}] skipped: {reason}")
                    continue
                step.command = [sys.executable, "-m", "zvperf", "conform", *cases, "--device", "cuda"]
                step.command += ["--backend", name, "--precision", precision]
                jobs.append(step)
        phase_end = time.monotonic() + self._time_for(CONFORM_PHASE_S)
        with concurrent.futures.ThreadPoolExecutor(CONFORM_WORKERS) as pool:
            for step in pool.map(lambda s: self._execute(s, phase_end - time.monotonic()), jobs):
                if step.status in ("ok", "failed"):
                    verdicts = re.findall(
                        r"^\s+(\w+)\s+max error (\S+)\s+tolerance (\S+)\s+(ok|FAIL)", step.output, re.M
                    )
                    step.detail = "; ".join(f"{n} {e} (<= {t}) {v}" for n, e, t, v in verdicts) or _last_line(step)
                self._say(f"[{step.name}] {step.status}: {step.detail}")

    def _suite(self, name: str, only: Sequence[str] = PRECISIONS) -> Path | None:
        """The solver rows of backend ``name`` in the precisions of ``only`` it runs."""
        from zvperf.backends import BackendUnavailable, check_runnable, get_backend

        step = self._add(Step(f"suite {name}"))
        backend = get_backend(name)
        precisions, reasons = [], []
        for precision in (p for p in only if p in backend.precisions):
            try:
                check_runnable(backend, "cuda", precision)
                precisions.append(precision)
            except BackendUnavailable as reason:
                reasons.append(f"{precision}: {reason}")
        if not precisions:
            step.status, step.detail = "skipped", "; ".join(reasons)
            self._say(f"[{step.name}] skipped: {step.detail}")
            return None
        args = ["--zv-models=zipvoice,zipvoice_distill", "--zv-steps=4,16", f"--zv-backends={name}"]
        args += [f"--zv-precision={','.join(precisions)}", f"--zv-lengths={FRAMES}", f"--zv-rounds={self.args.rounds}"]
        args += ["--zv-warmup=1", "-k", SOLVER_ROWS]
        return self._pytest(step, args, SUITE_LIMIT_S[name], reasons)

    def _compile_start(self) -> Path | None:
        """compile's cold start (a fresh process, empty caches, the full-size decoder compiled) and warm start (the
        same with the compile cache the cold one kept): the compile cost paid once per machine, and after."""
        step = self._add(Step("compile start fp16"))
        args = ["--zv-models=zipvoice_distill", "--zv-steps=4", "--zv-backends=compile", "--zv-precision=fp16"]
        args += ["--zv-rounds=1", "--zv-warmup=0", "-k", COMPILE_START]
        return self._pytest(step, args, self.args.compile_budget, [])

    def _guide(self) -> Path | None:
        step = self._add(Step("suite guide torch fp16"))
        args = ["--zv-matrix=guide", "--zv-backends=torch", "--zv-precision=fp16", "--zv-rounds=5", "--zv-warmup=2"]
        return self._pytest(step, args, GUIDE_LIMIT_S, [])

    def _gate_calibration(self) -> None:
        """The gate matrix's baseline for this GPU and one repetition of its calibration, in the whole budget."""
        from zvperf.suite.machine import hardware_key

        step = self._add(Step("gate calibration"))
        kept = self.output / "gate-calibration"
        step.command = [sys.executable, "-m", "zvperf", "calibrate", "--matrix=gate", "--device=cuda", "--runs=1"]
        step.command += [f"--baseline-runs={GATE_BASELINE_PROCESSES}", f"--slowdowns={GATE_SLOWDOWN}"]
        step.command += [f"--keep={kept}", "--", f"--zv-weights={self.args.weights}"]
        self._execute(step, self._time_for(math.inf))
        write_atomic(self.output / "gate-calibration.txt", step.output)
        stored = kept / "baselines-1" / f"{hardware_key('cuda')}.json"
        if step.status == "ok" and stored.is_file():
            (self.output / "baselines").mkdir(exist_ok=True)
            shutil.copyfile(stored, self.output / "baselines" / stored.name)
            rates = [line.strip() for line in step.output.splitlines() if RATE_LINE.search(line)]
            step.detail = f"baselines/{stored.name} written; " + "; ".join(rates)
        elif step.status == "ok":
            step.status, step.detail = "failed", f"the calibration wrote no baseline at {stored}"
        else:
            step.detail += f"; {_last_line(step)}"
        self._say(f"[{step.name}] {step.status}: {step.detail}")

    def _pytest(self, step: Step, args: list[str], limit: float, reasons: list[str]) -> Path | None:
        from zvperf.suite.launcher import pytest_command

        json_path = self.work / f"{step.name.replace(' ', '-')}.json"
        plugin = [] if _plugin_installed() else ["-p", "zvperf.suite.plugin"]
        step.command = pytest_command(
            *plugin, "-p", "no:cacheprovider", "-v", "-rfEs", "--zv-device=cuda", f"--zv-weights={self.args.weights}",
            f"--benchmark-json={json_path}", *args,
        )  # fmt: skip
        self._execute(step, self._time_for(limit))
        step.tests = dict(re.findall(r"::(test_\w+\[[^\]]+\]) (PASSED|FAILED|SKIPPED|ERROR)", step.output))
        counts = {v: list(step.tests.values()).count(v) for v in ("PASSED", "FAILED", "ERROR", "SKIPPED")}
        summary = ", ".join(f"{n} {v.lower()}" for v, n in counts.items() if n)
        skips = sorted(set(re.findall(r"^SKIPPED \[\d+\] [^:]+:\d+: (.*)$", step.output, re.M)))
        fails = re.findall(r"^(?:FAILED|ERROR) \S+?::(\S+) - (.*)$", step.output, re.M)
        details = [summary or "no benchmark ran"] + [f"{t}: {why}" for t, why in fails] + skips + reasons
        if step.status == "timed out":
            details.insert(0, step.detail)
        elif step.status == "ok" and not counts["PASSED"]:
            step.status = "failed"  # nothing was timed
        step.detail = "; ".join(details)
        # pytest-benchmark creates the file when it starts and fills it at the end: a step stopped at its limit
        # leaves it empty.
        saved = json_path.is_file() and json_path.stat().st_size > 0
        if json_path.is_file() and not saved:
            step.detail += "; no results written (stopped before pytest-benchmark saved them)"
        self._say(f"[{step.name}] {step.status}: {step.detail}")
        return json_path if saved else None

    def _merge(self, parts: Sequence[Path]) -> Path | None:
        from zvperf.suite.launcher import merge

        step = self._add(Step("results"))
        if not parts:
            step.status, step.detail = "failed", "no benchmark step wrote results"
            return None
        merged = merge(parts)
        for bench in merged["benchmarks"]:
            bench["extra_info"].pop("shard", None)  # one GPU: the parts are steps, not shards
        target = self.output / "results.json"
        write_atomic(target, json.dumps(merged, indent=2) + "\n")
        step.status, step.detail = "ok", f"{len(merged['benchmarks'])} benchmarks in {target.name}"
        self._say(f"[results] {step.detail}")
        return target

    def _gate(self, results: Path) -> None:
        step = self._add(Step("gate"))
        step.command = [sys.executable, "-m", "zvperf", "compare", str(results)]
        step.command += ["--baselines-dir", str(self.args.baselines_dir.resolve())]
        self._execute(step, self._time_for(FINISH_S, reserve=0), ok_codes=(0, 1))
        step.detail = step.output.strip()
        self._say(f"[gate]\n{step.detail}")

    def _report(self, results: Path) -> None:
        step = self._add(Step("report"))
        step.command = [sys.executable, "-m", "zvperf", "report", str(results), "--lang", "en"]
        step.command += ["-o", str(self.output / "report.en.md")]
        self._execute(step, self._time_for(FINISH_S, reserve=0))
        step.detail = _last_line(step)
        self._say(f"[report] {step.status}: {step.detail}")

    # -- running a step -------------------------------------------------------------------------------
    def _add(self, step: Step) -> Step:
        self.steps.append(step)
        return step

    def _time_for(self, limit: float, reserve: float = FINISH_S) -> float:
        """At most ``limit`` seconds, leaving ``reserve`` and the compile steps' share (until they start)."""
        return max(0.0, min(limit, self.deadline - time.monotonic() - reserve - self.kept_for_compile))

    def _execute(self, step: Step, limit: float, ok_codes: tuple[int, ...] = (0,)) -> Step:
        """Run ``step.command`` for at most ``limit`` seconds, in its own process group (all of it is stopped
        at the limit: a TensorRT build, a compile worker)."""
        if limit < MIN_STEP_S:
            step.status, step.detail = "not run", "the check's time budget was spent before this step"
            return step
        start = time.monotonic()
        with tempfile.TemporaryFile(mode="w+") as log:
            process = subprocess.Popen(
                step.command, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.work, start_new_session=True
            )
            try:
                code = process.wait(timeout=limit)
                step.status = "ok" if code in ok_codes else "failed"
                step.detail = f"exit status {code}"
            except subprocess.TimeoutExpired:
                step.status, step.detail = "timed out", f"stopped after its limit of {limit:.0f} s"
            # Also after an exit: what the step left running (a compile worker) must not time the next step.
            survivors = stop_group(process)
            if survivors:
                step.status, step.detail = "failed", f"{step.detail}; {not_stopped(survivors)}"
            log.seek(0)
            step.output = log.read()
        step.seconds = time.monotonic() - start
        return step

    # -- what it writes -------------------------------------------------------------------------------
    def _say(self, line: str) -> None:
        print(line, flush=True)

    def _finish(self, started: float, code: int) -> int:
        summary = {
            "exit_status": code,
            "seconds": round(time.monotonic() - started, 1),
            "environment": self.environment,
            "steps": [
                {k: v for k, v in dataclasses.asdict(s).items() if k != "output"} | {"seconds": round(s.seconds, 1)}
                for s in self.steps
            ],
        }
        write_atomic(self.output / "summary.json", json.dumps(summary, indent=2) + "\n")
        log = "".join(f"===== {s.name}: {' '.join(s.command)}\n{s.output}\n" for s in self.steps if s.command)
        write_atomic(self.output / "steps.log", log)
        write_atomic(self.output / "gpu-check.md", render(summary))
        shutil.rmtree(self.work, ignore_errors=True)  # the steps' own JSON, merged into results.json
        verdict = {0: "every step that ran passed", 1: "some steps failed", NO_GPU_EXIT: "there is no CUDA GPU here"}
        self._say(f"zvperf gpu-check: {verdict[code]} (exit {code}); wrote {self.output}/gpu-check.md")
        return code


def render(summary: dict[str, Any]) -> str:
    """The check's English report: versions and providers, then one line per step."""
    env = summary["environment"]
    lines = ["# zvperf GPU check", ""]
    lines += [f"- {key}: {value}" for key, value in env.items()]
    lines += ["", "| step | status | seconds | detail |", "| --- | --- | ---: | --- |"]
    for step in summary["steps"]:
        detail = step["detail"].replace("|", "/").replace("\n", "<br>")
        lines.append(f"| {step['name']} | {step['status']} | {step['seconds']} | {detail} |")
    lines += [
        "",
        f"Exit status {summary['exit_status']} after {summary['seconds']} s. Each step's output is in steps.log.",
    ]
    ran = {step["name"]: step["status"] for step in summary["steps"]}
    if ran.get("results") == "ok":
        lines.append(
            "The benchmark results are in results.json, the gate's verdicts above, their report in report.en.md."
        )
    return "\n".join(lines) + "\n"


def environment() -> dict[str, Any]:
    """Versions, the GPU(s) torch sees, and the ONNX Runtime providers found."""
    import torch

    from zvperf.suite.machine import software_versions
    from zvperf.suite.telemetry import load_nvml

    env: dict[str, Any] = {"platform": platform.platform(), **software_versions()}
    installed = {_normalised(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    for name in ("onnx", "onnxruntime-gpu", "tensorrt-cu13", "nvidia-ml-py", "typing-extensions", "soundfile"):
        env[name] = installed.get(name)
    piper = ("piper-phonemize", "piper-phonemize-cross", "piper-phonemize-fix")
    env["piper_phonemize"] = next((f"{n} {installed[n]}" for n in piper if n in installed), None)
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        env["onnxruntime_providers"] = onnxruntime.get_available_providers()
    env["CUDA_VISIBLE_DEVICES"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    env["NVIDIA_TF32_OVERRIDE"] = os.environ.get("NVIDIA_TF32_OVERRIDE", "0 (set by the check)")
    nvml, reason = load_nvml()
    env["nvml"] = f"driver {nvml.nvmlSystemGetDriverVersion()}" if nvml is not None else reason
    if torch.cuda.is_available():
        env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    else:
        env["gpus"] = []
        env["cuda_unavailable_reason"] = (
            f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no device; NVML: {env['nvml']}"
        )
    return env


def _normalised(distribution: str) -> str:
    """A distribution's name as the package index compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _plugin_installed() -> bool:
    """Whether pytest loads zvperf's plugin by itself (an installed zvperf registers its entry point)."""
    return any(ep.value == "zvperf.suite.plugin" for ep in importlib.metadata.entry_points(group="pytest11"))


def _last_line(step: Step) -> str:
    lines = [line for line in step.output.splitlines() if line.strip()]
    return lines[-1] if lines else step.detail
