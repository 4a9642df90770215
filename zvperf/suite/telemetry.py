"""What the hardware did while a benchmark ran: NVML on a GPU, process CPU time and memory on a CPU.

A background thread samples NVML (``nvidia-ml-py``, imported as ``pynvml``) every few milliseconds:
utilisation, memory, power, SM clock, temperature and clock-event (throttle) reasons. Energy comes
from the GPU's energy counter, read outside the timed region at the start and end of every round.
Where NVML is missing the GPU part says so and the run goes on.
"""

from __future__ import annotations

import os
import resource
import statistics
import threading
import time
from types import ModuleType
from typing import Any

import torch

# Clock-event reason bits (nvmlClocksEventReason*): what each means, and whether it slows the chip.
CLOCK_EVENT_REASONS: dict[int, tuple[str, bool]] = {
    0x1: ("gpu_idle", False),
    0x2: ("applications_clocks_setting", False),
    0x4: ("sw_power_cap", True),
    0x8: ("hw_slowdown", True),
    0x10: ("sync_boost", False),
    0x20: ("sw_thermal_slowdown", True),
    0x40: ("hw_thermal_slowdown", True),
    0x80: ("hw_power_brake_slowdown", True),
    0x100: ("display_clock_setting", False),
}


def decode_clock_reasons(mask: int) -> list[str]:
    return [name for bit, (name, _) in CLOCK_EVENT_REASONS.items() if mask & bit]


def is_throttling(reasons: list[str]) -> bool:
    slowing = {name for name, slows in CLOCK_EVENT_REASONS.values() if slows}
    return any(r in slowing for r in reasons)


def load_nvml() -> tuple[ModuleType | None, str]:
    """The pynvml module, initialised, or None and why not."""
    try:
        import pynvml
    except ImportError:
        return None, "nvidia-ml-py (pynvml) is not installed"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - NVMLError subclasses, or OSError when the library is absent
        return None, f"NVML could not start ({exc})"
    return pynvml, ""


class _GpuSampler:
    def __init__(self, nvml: ModuleType, index: int, interval: float) -> None:
        self.nvml = nvml
        self.handle = nvml.nvmlDeviceGetHandleByIndex(index)
        self.interval = interval
        self.samples: list[dict[str, float]] = []
        self.reasons = 0
        self.energy_per_round: list[float] = []
        self._round_start_mj: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zvperf-nvml", daemon=True)

    def _read(self) -> dict[str, float]:
        nv, h = self.nvml, self.handle
        util = nv.nvmlDeviceGetUtilizationRates(h)
        memory = nv.nvmlDeviceGetMemoryInfo(h)
        self.reasons |= int(nv.nvmlDeviceGetCurrentClocksEventReasons(h))
        return {
            "util_pct": float(util.gpu),
            "memory_used_mib": memory.used / 2**20,
            "power_w": nv.nvmlDeviceGetPowerUsage(h) / 1000.0,
            "sm_clock_mhz": float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
            "temperature_c": float(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
        }

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self._read())
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(self._read())

    def round_start(self) -> None:
        self._round_start_mj = self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)

    def round_end(self) -> None:
        if self._round_start_mj is not None:
            end = self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
            self.energy_per_round.append((end - self._round_start_mj) / 1000.0)
            self._round_start_mj = None

    def summary(self, timed_rounds: int, audio_seconds: float) -> dict[str, Any]:
        def column(key: str) -> list[float]:
            return [s[key] for s in self.samples]

        reasons = decode_clock_reasons(self.reasons)
        energy = self.energy_per_round[-timed_rounds:] if timed_rounds else []
        joules = statistics.median(energy) if energy else None
        return {
            "available": True,
            "samples": len(self.samples),
            "util_pct_mean": _mean(column("util_pct")),
            "memory_used_mib_peak": max(column("memory_used_mib")),
            "power_w_mean": _mean(column("power_w")),
            "power_w_max": max(column("power_w")),
            "sm_clock_mhz_min": min(column("sm_clock_mhz")),
            "sm_clock_mhz_median": statistics.median(column("sm_clock_mhz")),
            "temperature_c_max": max(column("temperature_c")),
            "clock_event_reasons": reasons,
            "throttled": is_throttling(reasons),
            "energy_j_per_round": joules,
            "joules_per_audio_second": joules / audio_seconds if joules is not None and audio_seconds else None,
        }


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _rss_mib() -> float:
    """Resident set size now, from /proc (Linux); elsewhere the process's peak so far."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Telemetry:
    """Telemetry for one benchmark: ``with Telemetry(device) as t:`` around it, ``t.summary(...)`` after.

    ``round_start``/``round_end`` go in the benchmark's untimed setup and teardown.
    """

    def __init__(self, device: str, interval: float = 0.02, nvml: ModuleType | None = None) -> None:
        self.device = device
        self.gpu: _GpuSampler | None = None
        self.gpu_reason = "not a CUDA run"
        self.interval = interval
        self._nvml = nvml
        self._rss_peak = 0.0
        self._rss_stop = threading.Event()
        self._rss_thread = threading.Thread(target=self._sample_rss, name="zvperf-rss", daemon=True)

    def _sample_rss(self) -> None:
        while not self._rss_stop.is_set():
            self._rss_peak = max(self._rss_peak, _rss_mib())
            self._rss_stop.wait(self.interval)

    def __enter__(self) -> Telemetry:
        if self.device == "cuda":
            nvml, self.gpu_reason = (self._nvml, "") if self._nvml is not None else load_nvml()
            if nvml is not None:
                index = torch.cuda.current_device() if torch.cuda.is_available() else 0
                self.gpu = _GpuSampler(nvml, index, self.interval)
                self.gpu.start()
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
        self._cpu_start = time.process_time()
        self._wall_start = time.perf_counter()
        self._rss_thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._cpu_seconds = time.process_time() - self._cpu_start
        self._wall_seconds = time.perf_counter() - self._wall_start
        self._rss_stop.set()
        self._rss_thread.join()
        self._rss_peak = max(self._rss_peak, _rss_mib())
        if self.gpu is not None:
            self.gpu.stop()

    def round_start(self) -> None:
        if self.gpu is not None:
            self.gpu.round_start()

    def round_end(self) -> None:
        if self.gpu is not None:
            self.gpu.round_end()

    def summary(self, timed_rounds: int, audio_seconds: float) -> dict[str, Any]:
        """Everything measured, as JSON-ready numbers; ``gpu.available`` is False (with a reason) without NVML."""
        out: dict[str, Any] = {
            "cpu": {
                "process_cpu_seconds": self._cpu_seconds,
                "wall_seconds": self._wall_seconds,
                "cpu_utilisation": self._cpu_seconds / self._wall_seconds if self._wall_seconds else None,
                "rss_mib_peak": self._rss_peak,
            },
            "gpu": self.gpu.summary(timed_rounds, audio_seconds)
            if self.gpu is not None
            else {"available": False, "reason": self.gpu_reason},
        }
        if self.device == "cuda" and torch.cuda.is_available():
            out["torch_peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        return out
