"""The figures besides time that the gate can judge: peak memory and, on a GPU, energy per second of audio.

Each is one number per run (per process), not one per round: peak memory is the largest allocation seen over the
whole benchmark, and energy is the GPU's counter over the whole timed block (``zvperf.suite.telemetry``). Without
rounds there is no significance test to make; a figure fails on a plain threshold, its relative change against
the reference: the median of the per-run figures a baseline entry keeps (one per run it pooled), or in an A/B
confirmation the median of the base commit's processes. A threshold is off unless gate.toml sets it.

Peak memory is the device's: on a GPU torch's peak allocation, or NVML's figure for this process where the
backend allocates outside torch (ONNX Runtime, TensorRT); on a CPU the process's peak resident memory. A GPU row
without either has no figure rather than the host's memory in its place. It is not judged for cold starts, whose
figure is the parent process's while the cold process runs. Energy needs NVML and a counter that advanced; a
throttled GPU (in the run or the baseline) makes it inconclusive, as it does the time verdict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

from zvperf.results.schema import BenchmarkFacts, Result


@dataclasses.dataclass(frozen=True)
class Metric:
    key: str  # the per-run figures' key in a baseline entry
    name: str  # as messages say it
    setting: str  # gate.toml's threshold for it (a field of zvperf.gate.config.Rule)
    unit: str
    decimals: int  # shown
    attribute: str  # the BenchmarkFacts property that gives the figure
    why_none: Callable[[BenchmarkFacts], str]  # why a result has no figure, as its telemetry recorded it
    throttle_sensitive: bool = False  # a throttled GPU makes the figure unjudgeable
    not_for_kinds: tuple[str, ...] = ()  # benchmark kinds whose figure does not measure them

    def figure(self, facts: BenchmarkFacts) -> float | None:
        if not self.applies(facts.kind):
            return None
        value = getattr(facts, self.attribute)
        return None if value is None else float(value)

    def applies(self, kind: str) -> bool:
        return kind not in self.not_for_kinds

    def text(self, value: float) -> str:
        return f"{value:.{self.decimals}f} {self.unit}"


def _no_memory(facts: BenchmarkFacts) -> str:
    if facts.device == "cuda":
        return "neither torch's allocator nor NVML's per-process reading gave a GPU figure"
    return "no memory telemetry"


def _no_energy(facts: BenchmarkFacts) -> str:
    gpu = facts.gpu_telemetry
    return gpu.get("reason") or (gpu.get("unavailable") or {}).get("energy") or "no GPU telemetry"


PEAK_MEMORY = Metric(
    "peak_memory_mib", "peak memory", "memory_threshold", "MiB", 0, "device_peak_memory_mib", _no_memory,
    not_for_kinds=("cold_start",),
)  # fmt: skip
ENERGY = Metric(
    "joules_per_audio_second", "energy per audio second", "energy_threshold", "J", 2, "joules_per_audio_second",
    _no_energy, throttle_sensitive=True,
)  # fmt: skip
METRICS = (PEAK_MEMORY, ENERGY)


def per_run(results: Sequence[Result]) -> dict[str, list[float]]:
    """Each metric's figures, one per result (run) that has one, to six significant digits; metrics none of them
    measured are left out."""
    figures = {
        metric.key: [float(f"{value:.6g}") for r in results if (value := metric.figure(r.facts)) is not None]
        for metric in METRICS
    }
    return {key: values for key, values in figures.items() if values}


def read_per_run(value: object) -> dict[str, list[float]]:
    """A baseline entry's ``per_run`` object; raises ValueError saying what is wrong."""
    if not isinstance(value, Mapping) or not all(
        isinstance(figures, list)
        and all(isinstance(x, int | float) and not isinstance(x, bool) and x >= 0 for x in figures)
        for figures in value.values()
    ):
        raise ValueError("'per_run' is not an object of lists of non-negative figures")
    return {str(key): [float(x) for x in figures] for key, figures in value.items()}
