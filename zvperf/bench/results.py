"""Benchmark results in pytest-benchmark's JSON shape, with zvperf's extra_info: one reader for all uses.

The live plugin builds them from ``benchmark.stats.as_dict()`` (exactly what pytest-benchmark writes
to ``--benchmark-json``), and ``zvperf compare``/``zvperf report`` read the saved file, so the
summary table, the sanity flags, the gate and the report all see the same numbers.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from zvperf.errors import ZvperfError
from zvperf.files import read_json

# extra_info keys every zvperf benchmark carries.
EXTRA_INFO_KEYS = (
    "kind", "audio_seconds", "rtf", "nfe", "ms_per_nfe", "frames", "model", "num_step", "backend",
    "precision", "device", "weights", "speedup_vs_zipvoice16", "telemetry",
)  # fmt: skip
KINDS = ("solver", "e2e", "text_encoder", "vocoder", "cold_start")


@dataclasses.dataclass
class Result:
    name: str  # pytest's test name, e.g. test_solver[zipvoice_distill-4step-torch-fp32]
    config_id: str  # the parametrization id
    extra: dict[str, Any]  # zvperf's extra_info (mutable: flags and speed-ups are added at the end)
    stats: dict[str, Any]  # pytest-benchmark's stats: median, iqr, rounds, ...
    data: list[float]  # raw round times in seconds (empty when the JSON was saved without them)

    @property
    def kind(self) -> str:
        return self.extra["kind"]

    @property
    def id(self) -> str:
        """``zipvoice_distill-4step-torch-fp32 solver``: what baselines and messages call a benchmark."""
        return f"{self.config_id} {self.kind}"

    @property
    def median(self) -> float:
        return float(self.stats["median"])

    @property
    def iqr(self) -> float:
        return float(self.stats["iqr"])

    @property
    def spread(self) -> float:
        """IQR / median: the relative noise of the rounds."""
        return self.iqr / self.median if self.median else float("inf")

    @property
    def flags(self) -> list[str]:
        return self.extra.setdefault("flags", [])

    @property
    def throttled(self) -> bool:
        gpu = (self.extra.get("telemetry") or {}).get("gpu") or {}
        return bool(gpu.get("throttled"))

    @classmethod
    def from_entry(cls, entry: dict[str, Any], source: str = "the results") -> Result:
        name = entry.get("name", "?")
        extra = entry.get("extra_info")
        if not isinstance(extra, dict) or not extra:
            raise ZvperfError(f"{source}: benchmark {name!r} has no zvperf extra_info (was it run by zvperf's suite?).")
        missing = [k for k in EXTRA_INFO_KEYS if k not in extra]
        if missing:
            raise ZvperfError(f"{source}: benchmark {name!r} lacks zvperf's extra_info key {missing[0]!r}.")
        stats = entry.get("stats")
        if not isinstance(stats, dict) or "median" not in stats:
            raise ZvperfError(f"{source}: benchmark {name!r} has no stats (median) from pytest-benchmark.")
        param = entry.get("param") or name.partition("[")[2].rstrip("]")
        return cls(name, param, extra, stats, [float(x) for x in entry.get("data") or stats.get("data") or []])


@dataclasses.dataclass
class ResultsFile:
    path: Path
    machine_info: dict[str, Any]
    commit_info: dict[str, Any]
    datetime: str
    results: list[Result]

    @property
    def zvperf_machine(self) -> dict[str, Any]:
        return self.machine_info.get("zvperf", {})

    @property
    def hardware_key(self) -> str:
        return self.zvperf_machine.get("hardware_key", "unknown")


def load_results(path: Path | str) -> ResultsFile:
    """Read a ``--benchmark-json`` file written by a zvperf run; bad files get one sentence naming them."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list) or "machine_info" not in data:
        raise ZvperfError(f"{path}: not pytest-benchmark output (no 'benchmarks' list and 'machine_info').")
    if not data["benchmarks"]:
        raise ZvperfError(f"{path}: holds no benchmarks.")
    if "zvperf" not in data["machine_info"]:
        raise ZvperfError(f"{path}: machine_info lacks zvperf's section (was it run with the zvperf plugin?).")
    results = [Result.from_entry(entry, str(path)) for entry in data["benchmarks"]]
    return ResultsFile(path, data["machine_info"], data.get("commit_info", {}), data.get("datetime", ""), results)


def add_speedups(results: list[Result]) -> None:
    """Set ``speedup_vs_zipvoice16`` on solver and end-to-end results: the zipvoice 16-step row of the same
    kind, length and device (torch fp32 preferred) divided by this row's median, when the run has one."""
    for result in results:
        if result.kind not in ("solver", "e2e"):
            continue
        candidates = [
            r
            for r in results
            if r.kind == result.kind
            and r.extra["model"] == "zipvoice"
            and r.extra["num_step"] == 16
            and r.extra.get("frames_bucket") == result.extra.get("frames_bucket")
            and r.extra.get("batch", 1) == result.extra.get("batch", 1)
            and r.extra["device"] == result.extra["device"]
        ]
        if candidates:
            reference = min(candidates, key=lambda r: (r.extra["backend"] != "torch", r.extra["precision"] != "fp32"))
            result.extra["speedup_vs_zipvoice16"] = reference.median / result.median
