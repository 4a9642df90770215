"""Results files in pytest-benchmark's shape with chosen round times, for the gate's and baselines' tests."""

from __future__ import annotations

import json
import multiprocessing.synchronize
import re
from pathlib import Path
from typing import Any

from pytest_benchmark.stats import Stats

from zvperf.gate import baselines
from zvperf.gate.markdown import ZERO_WIDTH_SPACE
from zvperf.results.schema import REQUIRED_KEYS, ResultsFile, load_results

KEY = "cpu-test-2c"
JUDGED, STORED = 3, 8  # the gate matrix's processes: judged, and pooled into its baseline


def spread_rounds(median: float, n: int = 7, spread: float = 0.04) -> list[float]:
    """``n`` round times evenly spread over ``median`` +- spread/2 (for n=7 pytest-benchmark's IQR is 4/7 of the
    spread)."""
    return [median * (1 + spread * (i / (n - 1) - 0.5)) for i in range(n)]


def _numbers(data: list[float]) -> dict[str, Any]:
    """The statistics pytest-benchmark itself would write for these rounds."""
    stats = Stats()
    for duration in data:
        stats.update(duration)
    return {"median": stats.median, "iqr": stats.iqr, "rounds": stats.rounds, "data": data}


def bench(param: str, data: list[float], kind: str = "solver", **extra: Any) -> dict[str, Any]:
    """One pytest-benchmark entry with zvperf's extra_info; ``extra`` overrides extra_info keys."""
    info: dict[str, Any] = {key: None for key in REQUIRED_KEYS}
    info.update(kind=kind, weights="official", telemetry={"gpu": {"available": False}}, flags=[])
    info.update(extra)
    return {"name": f"test_{kind}[{param}]", "param": param, "extra_info": info, "stats": _numbers(data)}


def write_results(
    path: Path, benchmarks: list[dict[str, Any]], key: str = KEY, torch: str = "2.11.0", commit: str = "abc123"
) -> ResultsFile:
    """Write a --benchmark-json file and read it back with zvperf's reader."""
    software = {"torch": torch, "cuda": None, "tensorrt": None, "onnxruntime": None}
    document = {
        "machine_info": {"zvperf": {"hardware_key": key, "cpu": "Test CPU", "cpu_cores": 2, "software": software}},
        "commit_info": {"id": commit, "dirty": False},
        "datetime": "2026-01-02T03:04:05+00:00",
        "benchmarks": benchmarks,
    }
    path.write_text(json.dumps(document))
    return load_results(path)


def write_processes(
    path: Path, benchmarks: list[dict[str, Any]], count: int = JUDGED, step: float = 0.002, **kwargs: Any
) -> list[ResultsFile]:
    """``count`` separate processes' results files of ``benchmarks`` (``NAME-1.json``, ``NAME-2.json``, ...), each
    process's rounds ``step`` (0.2%) slower than the last's, as processes of unchanged code differ: no two medians
    tie."""
    files = []
    for index in range(count):
        factor = 1 + step * index
        scaled = [{**b, "stats": _numbers([t * factor for t in b["stats"]["data"]])} for b in benchmarks]
        files.append(write_results(path.with_name(f"{path.stem}-{index + 1}{path.suffix}"), scaled, **kwargs))
    return files


def store(directory: Path, path: Path, benchmarks: list[dict[str, Any]], count: int = STORED) -> Path:
    """A baseline folder whose entries pool ``count`` processes of ``benchmarks`` (their files at ``path``)."""
    baselines.update(directory, *write_processes(path, benchmarks, count))
    return directory


def plain(markdown: str) -> str:
    """Markdown text as it reads: zvperf.gate.markdown's backslash escapes and zero-width spaces undone."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown).replace(ZERO_WIDTH_SPACE, "")


def table_cells(line: str) -> list[str]:
    """The cells of a Markdown table row, split on its unescaped pipes, as GFM splits them ([] for another line)."""
    if not line.startswith("| "):
        return []
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]


def with_unmeasured(results: ResultsFile, unmeasured: dict[str, dict[str, str]], timed: bool = True) -> ResultsFile:
    """The same file with benchmarks the run recorded as not timed (results format 3's zvperf.unmeasured), and
    without its timed ones unless ``timed``."""
    document = json.loads(results.path.read_text())
    document["zvperf"] = {"format": 3, "unmeasured": unmeasured}
    document["benchmarks"] = document["benchmarks"] if timed else []
    results.path.write_text(json.dumps(document))
    return load_results(results.path)


def update_many(directory: Path, prefix: str, count: int, start: multiprocessing.synchronize.Barrier) -> None:
    """A process's share of the concurrent-update test (here, away from torch: spawned processes import it)."""
    start.wait()
    for i in range(count):
        results = write_results(directory / f"{prefix}{i}.json", [bench(f"{prefix}{i}", [1.0, 1.1, 1.2])])
        baselines.update(directory / "bl", results)
