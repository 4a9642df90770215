"""Time to verdict: how long a pull request's gate job takes, from rows measured on the machine it runs on.

Each row of the matrix costs its warm-up and timed rounds at the median a results file measured for it; under the
gate matrix's stopping rule the timed rounds are those that bring the median's 95% interval inside its precision
(estimated from the measured spread, the interval of a median being about 1.96 x 1.2533 standard deviations over
the square root of the rounds, the standard deviation the IQR over 1.349), at least the preset's first rounds and
at most what its time cap and most rounds allow. A row the file did not measure takes the time of the same row in
eager torch, where measured: the same stages, the solver launch-bound, so no faster than a CUDA graph (an upper
bound, said as a stand-in); a row with neither is listed and not counted. Each process adds a fixed cost (start,
imports, building and verifying its configurations), the judged processes run one after another, and the A/B
confirmation runs its processes of each side over the rows in doubt.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from zvperf.results.schema import Result, ResultsFile
from zvperf.suite.matrix import Matrix, Preset

Z_95 = 1.96
MEDIAN_EFFICIENCY = 1.2533  # the standard error of a median over that of a mean, for normal rounds: sqrt(pi / 2)
IQR_TO_SD = 1.349  # a normal distribution's IQR in standard deviations

# The H100's fixed cost of a benchmark process: reports/nvidia-h100-80gb-hbm3/gpu-check.md, step "suite cudagraph",
# 30.2 s of wall time for 6 solver rows whose timed and warm-up rounds took 4.0 s (4 rounds x 988 ms of medians):
# 26.2 s to start, import, build, capture and verify six configurations, the most of the steps it timed.
H100_PROCESS_SECONDS = 26.2


@dataclasses.dataclass(frozen=True)
class RowTime:
    id: str
    median: float | None  # seconds a round, None where nothing was measured
    spread: float | None  # IQR over the median, as measured
    rounds: int  # timed rounds expected
    seconds: float  # warm-up and timed rounds
    source: str  # "measured", "stand-in: <id>" or "not measured"
    why: str = ""  # what ends its rounds: its count, "precise", "time cap", "max rounds"


def row_ids(matrix: Matrix) -> list[str]:
    """The benchmark ids a matrix times, in its order."""
    ids = []
    for config in matrix.configs:
        for kind in matrix.kinds:
            if kind == "solver":
                ids += [f"{c.id} solver" for c in matrix.combos if c.config == config]
            elif kind == "e2e":
                ids += [f"{c.id} e2e" for c in matrix.utterances if c.config == config]
            elif kind != "cold_start":
                ids.append(f"{config.id} {kind}")
    return ids


def expected_rounds(median: float, spread: float, preset: Preset) -> tuple[int, str]:
    """Timed rounds, and what ends them: the preset's fixed count, or under its stopping rule the rounds whose
    median interval reaches the precision (at least the preset's first rounds), else its time cap or most rounds."""
    rule = preset.stopping
    if rule is None:
        return preset.rounds, "fixed"
    sd = spread * median / IQR_TO_SD
    needed = math.ceil((Z_95 * MEDIAN_EFFICIENCY * sd / (rule.precision * median)) ** 2) if sd else 0
    capped = max(preset.rounds, math.ceil(rule.time_cap_s / median))
    rounds = max(preset.rounds, needed)
    if rounds <= min(capped, rule.max_rounds):
        return rounds, "precise"
    return (capped, "time cap") if capped <= rule.max_rounds else (rule.max_rounds, "max rounds")


def _stand_in(row: str) -> str:
    """The same row in eager torch: ``zipvoice-16step-cudagraph-fp16-1800f solver`` -> ``...-torch-fp16-...``."""
    config, _, kind = row.rpartition(" ")
    parts = config.split("-")
    for backend in ("cudagraph", "trt", "compile"):
        if backend in parts:
            parts[parts.index(backend)] = "torch"
    return f"{'-'.join(parts)} {kind}"


def row_times(ids: Sequence[str], measured: ResultsFile, preset: Preset) -> list[RowTime]:
    by_id: dict[str, Result] = {r.id: r for r in measured.results}
    times = []
    for row in ids:
        result, source = by_id.get(row), "measured"
        if result is None and _stand_in(row) in by_id:
            result, source = by_id[_stand_in(row)], f"stand-in: {_stand_in(row)}"
        if result is None:
            times.append(RowTime(row, None, None, 0, 0.0, "not measured"))
            continue
        rounds, why = expected_rounds(result.median, result.spread, preset)
        seconds = (preset.warmup_rounds + rounds) * result.median
        times.append(RowTime(row, result.median, result.spread, rounds, seconds, source, why))
    return times


@dataclasses.dataclass(frozen=True)
class VerdictTime:
    rows: list[RowTime]
    process_seconds: float  # the fixed cost of one process
    processes: int  # judged processes, one after another
    confirm_processes: int  # A/B processes of each side
    confirmed: list[RowTime]  # the rows an A/B re-runs: the longest ones

    @property
    def rows_seconds(self) -> float:
        return sum(r.seconds for r in self.rows)

    @property
    def judged_seconds(self) -> float:
        return self.processes * (self.process_seconds + self.rows_seconds)

    @property
    def confirm_seconds(self) -> float:
        if not self.confirmed:
            return 0.0
        return 2 * self.confirm_processes * (self.process_seconds + sum(r.seconds for r in self.confirmed))

    @property
    def total_seconds(self) -> float:
        return self.judged_seconds + self.confirm_seconds


def verdict_time(
    ids: Sequence[str],
    measured: ResultsFile,
    preset: Preset,
    process_seconds: float,
    confirm_processes: int,
    confirm_rows: int = 3,
) -> VerdictTime:
    """The expected time of the gate job: the judged processes, then an A/B of the ``confirm_rows`` longest rows."""
    rows = row_times(ids, measured, preset)
    longest = sorted((r for r in rows if r.seconds), key=lambda r: r.seconds, reverse=True)[:confirm_rows]
    return VerdictTime(rows, process_seconds, preset.processes, confirm_processes, longest)
