"""The gate in a pytest run: ``--zv-gate``, ``--zv-update-baseline`` and where baselines live.

The plugin calls ``add_options`` from ``pytest_addoption``, ``GateRun.from_config`` at configure time
(a broken gate config or baseline file is a usage error before anything is timed, not after), and
``GateRun.finish`` at session end, once the sanity flags are on the results.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from pathlib import Path

import pytest

from zvperf.bench import baselines, gate
from zvperf.bench.gate_config import GateConfig, load_config
from zvperf.bench.machine import hardware_key, machine_summary
from zvperf.bench.results import Result, ResultsFile
from zvperf.errors import ZvperfError


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("zvperf")
    group.addoption(
        "--zv-gate",
        action="store_true",
        help="compare every result with its baseline for this hardware; the run fails on a significant slowdown",
    )
    group.addoption(
        "--zv-update-baseline",
        action="store_true",
        help="merge this run's results into the baseline file for this hardware (previous values kept for revert)",
    )
    group.addoption(
        "--baselines-dir",
        "--zv-baselines-dir",
        dest="zv_baselines_dir",
        metavar="DIR",
        default=str(baselines.DEFAULT_DIR),
        help="where the baseline files are (default: ./baselines, the repository's when run from its root)",
    )
    group.addoption(
        "--zv-gate-config", metavar="FILE", help="gate settings (default: BASELINES_DIR/gate.toml when present)"
    )


@dataclasses.dataclass
class GateRun:
    gate: bool
    update: bool
    directory: Path
    config: GateConfig

    @property
    def active(self) -> bool:
        return self.gate or self.update

    @classmethod
    def from_config(cls, config: pytest.Config, device: str) -> GateRun:
        directory = Path(config.getoption("zv_baselines_dir")).resolve()
        run = cls(config.getoption("zv_gate"), config.getoption("zv_update_baseline"), directory, GateConfig())
        if run.gate:
            config_file = config.getoption("zv_gate_config")
            run.config = load_config(Path(config_file) if config_file else None, directory)
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
                report = gate.compare(results, self.directory, self.config)
                lines += report.lines()
                failed = report.failed
            if self.update:
                lines += baselines.update(self.directory, results).lines()
        except ZvperfError as exc:
            lines.append(f"zvperf gate: error: {exc}")
            failed = True
        return lines, failed


def session_results(config: pytest.Config, results: list[Result], device: str) -> ResultsFile:
    """This session's results with the machine and commit facts pytest-benchmark will write to its JSON."""
    return ResultsFile(
        path=Path("this pytest run"),
        machine_info={"zvperf": machine_summary(device)},
        commit_info=config.hook.pytest_benchmark_generate_commit_info(config=config) or {},
        datetime=datetime.now(timezone.utc).isoformat(),
        results=results,
    )
