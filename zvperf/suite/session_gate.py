"""The gate inside a pytest run: ``--zv-gate`` judges the session's results, ``--zv-update-baseline`` stores them.

The plugin builds a :class:`GateRun` at configure time (a broken gate config or baseline file is a usage
error before anything is timed, not after) and calls :meth:`GateRun.finish` at session end, once the
sanity flags are on the results. The judging itself is ``zvperf.gate``'s, the same as ``zvperf compare``.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from pathlib import Path

import pytest

from zvperf.errors import ZvperfError
from zvperf.gate import baselines, judge
from zvperf.gate.config import GateConfig, load_config
from zvperf.gate.confirm import MIN_PROCESSES
from zvperf.results.schema import RESULTS_FORMAT, Result, ResultsFile, Unmeasured
from zvperf.suite.confirm import confirm_report, zvperf_sides
from zvperf.suite.machine import hardware_key, machine_summary
from zvperf.suite.options import measurement_args


@dataclasses.dataclass
class GateRun:
    gate: bool
    update: bool
    directory: Path
    config: GateConfig
    require_baseline: bool = False
    confirm: bool = False  # --zv-confirm: settle failed and inconclusive verdicts A/B against the base commit
    base_checkout: Path = Path(".zvperf-base")
    processes: int = MIN_PROCESSES
    rerun_args: list[str] = dataclasses.field(default_factory=list)  # what the A/B processes measure
    head_args: list[str] = dataclasses.field(default_factory=list)  # the head's alone: an injected slowdown

    @property
    def active(self) -> bool:
        return self.gate or self.update

    @classmethod
    def from_config(cls, config: pytest.Config, device: str) -> GateRun:
        directory = Path(config.getoption("zv_baselines_dir")).resolve()
        slowdown = config.getoption("zv_inject_slowdown")
        run = cls(
            config.getoption("zv_gate"),
            config.getoption("zv_update_baseline"),
            directory,
            GateConfig(),
            config.getoption("zv_require_baseline"),
            config.getoption("zv_confirm"),
            Path(config.getoption("zv_base_checkout")).resolve(),
            config.getoption("zv_confirm_processes"),
            measurement_args(config),
            [f"--zv-inject-slowdown={slowdown}"] if slowdown else [],
        )
        if run.confirm and not run.gate:
            raise ZvperfError("--zv-confirm confirms the gate's verdicts: it needs --zv-gate.")
        if run.gate:
            run.config = load_config(config.getoption("zv_gate_config"), directory)
        if run.active:
            baselines.read(baselines.baseline_path(directory, hardware_key(device)))  # raises if it is broken
        return run

    def finish(self, results: ResultsFile) -> tuple[list[str], bool]:
        """Gate (against the baselines as they were), then update; returns the report lines and whether the
        run must fail."""
        lines: list[str] = []
        failed = False
        try:
            if self.gate:
                report = judge.compare(results, self.directory, self.config, self.require_baseline)
                if self.confirm:
                    sides = zvperf_sides(self.base_checkout, self.head_args)
                    report = confirm_report(report, sides, self.rerun_args, self.processes)
                lines += report.lines()
                failed = report.failed
            if self.update:
                lines += baselines.update(self.directory, results).lines()
        except ZvperfError as exc:
            lines.append(f"zvperf gate: error: {exc}")
            failed = True
        return lines, failed


def session_results(
    config: pytest.Config, results: list[Result], device: str, unmeasured: dict[str, Unmeasured]
) -> ResultsFile:
    """This session's results (and its benchmarks without one) with the machine and commit facts pytest-benchmark
    will write to its JSON."""
    return ResultsFile(
        path=Path("this pytest run"),
        machine_info={"zvperf": machine_summary(device)},
        commit_info=config.hook.pytest_benchmark_generate_commit_info(config=config) or {},
        datetime=datetime.now(timezone.utc).isoformat(),
        results=results,
        format=RESULTS_FORMAT,
        unmeasured=unmeasured,
    )
