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
from zvperf.results.schema import RESULTS_FORMAT, Result, ResultsFile, Unmeasured
from zvperf.suite.machine import hardware_key, machine_summary


@dataclasses.dataclass
class GateRun:
    gate: bool
    update: bool
    directory: Path
    config: GateConfig
    require_baseline: bool = False

    @property
    def active(self) -> bool:
        return self.gate or self.update

    @classmethod
    def from_config(cls, config: pytest.Config, device: str) -> GateRun:
        directory = Path(config.getoption("zv_baselines_dir")).resolve()
        run = cls(
            config.getoption("zv_gate"),
            config.getoption("zv_update_baseline"),
            directory,
            GateConfig(),
            config.getoption("zv_require_baseline"),
        )
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
