"""A synthetic history: results files of many commits, with a known step, a known slow drift and flagged runs.

Commit ``k`` (0 to RUNS - 1) is dated ``k`` days after the first. Its medians carry 1% of seeded noise around:

* STEP_CONFIG: 0.2 s solver, 0.26 s end to end, both 10% slower from commit STEP_AT on;
* DRIFT_CONFIG: 0.5 s solver, 0.6 s end to end, both 0.3% slower per commit (no step);
* FLAT_CONFIG: 0.1 s solver, 0.13 s end to end, flat; its solver flagged noisy and throttled at DOUBTFUL commits;
* a vocoder benchmark, flat, which the report's plots leave out.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import multiprocessing.synchronize
import random
from pathlib import Path
from typing import Any

from tests.gate_data import bench, spread_rounds
from zvperf.history import writer
from zvperf.results.schema import load_results

KEY = "cpu-test-2c"
RUNS = 40
STEP_AT, STEP = 23, 0.10
DRIFT = 0.003  # per commit
NOISE = 0.01
DOUBTFUL = (5, 31)
STEP_CONFIG = "zipvoice_distill-4step-torch-fp32"
DRIFT_CONFIG = "zipvoice-16step-torch-fp32"
FLAT_CONFIG = "zipvoice_distill-2step-torch-fp32"
# configuration -> (model, steps, solver seconds, end-to-end seconds)
CONFIGS = {
    STEP_CONFIG: ("zipvoice_distill", 4, 0.2, 0.26),
    DRIFT_CONFIG: ("zipvoice", 16, 0.5, 0.6),
    FLAT_CONFIG: ("zipvoice_distill", 2, 0.1, 0.13),
}
FIRST_DAY = dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone.utc)


def commit_id(k: int) -> str:
    return hashlib.sha1(f"commit {k}".encode()).hexdigest()


def commit_time(k: int) -> str:
    return (FIRST_DAY + dt.timedelta(days=k)).isoformat()


def level(config_id: str, kind: str, k: int) -> float:
    """The true median of a benchmark at commit ``k``, before noise."""
    _, _, solver, e2e = CONFIGS[config_id]
    base = solver if kind == "solver" else e2e
    if config_id == STEP_CONFIG and k >= STEP_AT:
        base *= 1 + STEP
    if config_id == DRIFT_CONFIG:
        base *= 1 + DRIFT * k
    return base


def results_document(k: int, key: str = KEY, torch: str = "2.11.0") -> dict[str, Any]:
    """Commit ``k``'s run as pytest-benchmark JSON with zvperf's facts (10 rounds per benchmark)."""
    noise = random.Random(k)
    benchmarks = []
    for config_id, (model, steps, _, _) in CONFIGS.items():
        for kind in ("solver", "e2e"):
            median = level(config_id, kind, k) * (1 + NOISE * noise.gauss(0, 1))
            doubtful = config_id == FLAT_CONFIG and kind == "solver" and k in DOUBTFUL
            entry = bench(
                config_id,
                spread_rounds(median, n=10, spread=0.3 if doubtful else 0.02),
                kind=kind,
                model=model,
                num_step=steps,
                backend="torch",
                precision="fp32",
                device="cpu",
                rtf=median / 3.5,
                telemetry={"gpu": {"available": True, "joules_per_audio_second": 4.0}, "torch_peak_allocated_mib": 900},
                flags=["noisy: IQR is 17% of the median", "throttled: the GPU slowed its clocks"] if doubtful else [],
            )
            benchmarks.append(entry)
    vocoder = bench("zipvoice_distill-torch-fp32", spread_rounds(0.004, n=10), kind="vocoder", model="zipvoice_distill")
    vocoder["extra_info"].update(backend="torch", precision="fp32", device="cpu")
    software = {"torch": torch, "cuda": None, "tensorrt": None, "onnxruntime": None}
    return {
        "machine_info": {"zvperf": {"hardware_key": key, "cpu": "Test CPU", "cpu_cores": 2, "software": software}},
        "commit_info": {"id": commit_id(k), "time": commit_time(k), "dirty": False},
        "datetime": (FIRST_DAY + dt.timedelta(days=k, hours=3)).isoformat(),
        "benchmarks": [*benchmarks, vocoder],
    }


def write_run(folder: Path, k: int, **options: Any) -> Path:
    path = folder / f"run{k:02d}.json"
    path.write_text(json.dumps(results_document(k, **options)))
    return path


def write_runs(folder: Path, runs: range = range(RUNS), key: str = KEY) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [write_run(folder, k, key=key) for k in runs]


def append_many(directory: Path, runs: range, start: multiprocessing.synchronize.Barrier) -> None:
    """A process's share of the concurrent-append test (here, away from torch: spawned processes import it)."""
    paths = write_runs(directory / f"results{runs.start}", runs)
    start.wait()
    for path in paths:
        writer.append(directory / "history", load_results(path))
