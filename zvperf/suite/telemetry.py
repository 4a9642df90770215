"""What the hardware did while a benchmark ran: NVML on a GPU, process CPU time and memory on a CPU.

A background thread samples NVML (``nvidia-ml-py``, imported as ``pynvml``) every few milliseconds:
utilisation, memory (the device's and this process's), power, SM clock, temperature and clock-event
(throttle) reasons. Each field is read on its own: one NVML cannot give is recorded as unavailable, with
NVML's error, and the others go on. The GPU is found by its UUID, which CUDA_VISIBLE_DEVICES cannot make
ambiguous (NVML's indices ignore it). Energy is the GPU's energy counter read at the start and end of every
round, outside the timed region; energy per round is the counter's difference over the whole timed block
divided by its rounds, since the counter advances in steps too coarse for a single round of a few
milliseconds. Power is the driver's reading, which on Ampere and newer GPUs is an average over one second.
Where NVML is missing the GPU part says so and the run goes on.
"""

from __future__ import annotations

import os
import resource
import statistics
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch

from zvperf.errors import ZvperfError

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

POWER_READING = (
    "the driver's power reading (nvmlDeviceGetPowerUsage): an average over 1 s on Ampere and newer GPUs, "
    "instantaneous on older ones"
)
ENERGY_METHOD = "energy counter difference over the whole timed block, divided by its rounds"


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


def cuda_device_uuid(index: int | None = None) -> str:
    """The UUID of a CUDA device as this process numbers it (after CUDA_VISIBLE_DEVICES), without a prefix."""
    if not torch.cuda.is_available():
        raise ZvperfError("no CUDA device is available")
    props = torch.cuda.get_device_properties(torch.cuda.current_device() if index is None else index)
    return str(props.uuid).removeprefix("GPU-")  # a torch._C._CUuuid: str() gives the 8-4-4-4-12 hex form


def nvml_handle(nvml: ModuleType, uuid: str) -> Any:
    """NVML's handle of the device with this UUID (NVML names it GPU-<uuid>, or MIG-<uuid> for a MIG slice)."""
    try:
        return nvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
    except Exception:  # noqa: BLE001 - NVMLError_NotFound, when the UUID is a MIG instance's
        return nvml.nvmlDeviceGetHandleByUUID(f"MIG-{uuid}")


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


class _GpuSampler:
    def __init__(self, nvml: ModuleType, handle: Any, interval: float) -> None:
        self.nvml = nvml
        self.handle = handle
        self.interval = interval
        self.fields = self._fields()
        self.samples: dict[str, list[float]] = {name: [] for name in self.fields}
        self.failures: dict[str, tuple[int, str]] = {}  # field -> (failed reads, the first error)
        self.reads = 0
        self.reasons = 0
        self.energy_marks: list[tuple[float, int | None]] = []  # (time, counter mJ) at each round's start and end
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zvperf-nvml", daemon=True)

    def _fields(self) -> dict[str, Callable[[], float]]:
        nv, h = self.nvml, self.handle
        return {
            "util_pct": lambda: float(nv.nvmlDeviceGetUtilizationRates(h).gpu),
            "memory_used_mib": lambda: nv.nvmlDeviceGetMemoryInfo(h).used / 2**20,
            "process_memory_mib": self._process_memory_mib,
            "power_w": lambda: nv.nvmlDeviceGetPowerUsage(h) / 1000.0,
            "sm_clock_mhz": lambda: float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
            "temperature_c": lambda: float(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
            "clock_event_reasons": self._clock_reasons,
        }

    def _process_memory_mib(self) -> float:
        """This process's device memory as the driver counts it: what TensorRT and ONNX Runtime allocate too,
        which torch's allocator statistics do not see."""
        pid = os.getpid()
        for process in self.nvml.nvmlDeviceGetComputeRunningProcesses(self.handle):
            if process.pid == pid:
                if process.usedGpuMemory is None:
                    raise ZvperfError("NVML does not report per-process memory here")
                return process.usedGpuMemory / 2**20
        raise ZvperfError(f"process {pid} is not in NVML's list (another PID namespace?)")

    def _clock_reasons(self) -> float:
        mask = int(self.nvml.nvmlDeviceGetCurrentClocksEventReasons(self.handle))
        self.reasons |= mask
        return float(mask)

    def _read(self) -> None:
        self.reads += 1
        for name, read in self.fields.items():
            try:
                self.samples[name].append(read())
            except Exception as exc:  # noqa: BLE001 - each field fails alone, whatever NVML raises
                failed, first = self.failures.get(name, (0, _reason(exc)))
                self.failures[name] = (failed + 1, first)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._read()
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._read()

    def mark_energy(self) -> None:
        """Read the energy counter (at a round's start and end, outside the timed region)."""
        try:
            counter: int | None = int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        except Exception as exc:  # noqa: BLE001 - the counter fails alone too
            counter = None
            failed, first = self.failures.get("energy", (0, _reason(exc)))
            self.failures["energy"] = (failed + 1, first)
        self.energy_marks.append((time.perf_counter(), counter))

    def _energy(self, timed_rounds: int) -> tuple[float | None, float | None, str | None]:
        """(joules per round over the timed block, the block's seconds, why there is no figure)."""
        if not timed_rounds or len(self.energy_marks) < 2 * timed_rounds:
            return None, None, "no timed rounds were marked"
        (start_s, start_mj), (end_s, end_mj) = self.energy_marks[-2 * timed_rounds], self.energy_marks[-1]
        if start_mj is None or end_mj is None:
            return None, None, self.failures.get("energy", (0, "the energy counter could not be read"))[1]
        if end_mj <= start_mj:
            return (
                None,
                end_s - start_s,
                (
                    f"the energy counter did not advance over the timed block ({timed_rounds} rounds, "
                    f"{end_s - start_s:.3f} s): too short for its update interval"
                ),
            )
        return (end_mj - start_mj) / 1000.0 / timed_rounds, end_s - start_s, None

    def summary(self, timed_rounds: int, audio_seconds: float) -> dict[str, Any]:
        def column(key: str) -> list[float]:
            return self.samples[key]

        unavailable = {
            name: f"{first} ({failed} of {self.reads if name != 'energy' else len(self.energy_marks)} reads)"
            for name, (failed, first) in self.failures.items()
        }
        joules, block_seconds, no_energy = self._energy(timed_rounds)
        if no_energy and "energy" not in unavailable:
            unavailable["energy"] = no_energy
        reasons = decode_clock_reasons(self.reasons)
        return {
            "available": True,
            "samples": self.reads,
            "util_pct_mean": _mean(column("util_pct")),
            "memory_used_mib_peak": _max(column("memory_used_mib")),
            "process_memory_mib_peak": _max(column("process_memory_mib")),
            "power_w_mean": _mean(column("power_w")),
            "power_w_max": _max(column("power_w")),
            "power_reading": POWER_READING,
            "sm_clock_mhz_min": min(column("sm_clock_mhz"), default=None),
            "sm_clock_mhz_median": statistics.median(column("sm_clock_mhz")) if column("sm_clock_mhz") else None,
            "temperature_c_max": _max(column("temperature_c")),
            "clock_event_reasons": reasons,
            "throttled": is_throttling(reasons) if column("clock_event_reasons") else None,
            "energy_j_per_round": joules,
            "energy_method": ENERGY_METHOD,
            "energy_block_seconds": block_seconds,
            "joules_per_audio_second": joules / audio_seconds if joules is not None and audio_seconds else None,
            "unavailable": unavailable,
        }


def _max(values: list[float]) -> float | None:
    return max(values, default=None)


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

    ``round_start``/``round_end`` go in the benchmark's untimed setup and teardown. ``torch_memory`` False
    (a backend with its own allocator: ONNX Runtime, TensorRT) leaves torch's peak allocation out, so that
    the figure the report shows is NVML's, which sees every allocation of the process.
    """

    def __init__(
        self,
        device: str,
        interval: float = 0.02,
        nvml: ModuleType | None = None,
        gpu_uuid: str | None = None,
        torch_memory: bool = True,
    ) -> None:
        self.device = device
        self.gpu: _GpuSampler | None = None
        self.gpu_reason = "not a CUDA run"
        self.interval = interval
        self.torch_memory = torch_memory
        self._nvml = nvml
        self._gpu_uuid = gpu_uuid
        self._rss_peak = 0.0
        self._rss_stop = threading.Event()
        self._rss_thread = threading.Thread(target=self._sample_rss, name="zvperf-rss", daemon=True)

    def _sample_rss(self) -> None:
        while not self._rss_stop.is_set():
            self._rss_peak = max(self._rss_peak, _rss_mib())
            self._rss_stop.wait(self.interval)

    def _start_gpu(self) -> None:
        nvml, self.gpu_reason = (self._nvml, "") if self._nvml is not None else load_nvml()
        if nvml is None:
            return
        try:
            handle = nvml_handle(nvml, self._gpu_uuid or cuda_device_uuid())
        except Exception as exc:  # noqa: BLE001 - no CUDA device, or NVML does not know its UUID
            self.gpu_reason = f"NVML has no handle for this process's GPU ({_reason(exc)})"
            return
        self.gpu = _GpuSampler(nvml, handle, self.interval)
        self.gpu.start()

    def __enter__(self) -> Telemetry:
        if self.device == "cuda":
            self._start_gpu()
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
            self.gpu.mark_energy()

    def round_end(self) -> None:
        if self.gpu is not None:
            self.gpu.mark_energy()

    def summary(self, timed_rounds: int, audio_seconds: float) -> dict[str, Any]:
        """Everything measured, as JSON-ready numbers; ``gpu.available`` is False (with a reason) without NVML.

        ``timed_rounds``: how many of the last rounds were timed (the warm-up rounds come before them)."""
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
        if self.device == "cuda" and torch.cuda.is_available() and self.torch_memory:
            out["torch_peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        return out
