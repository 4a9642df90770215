"""Telemetry against a fake NVML with known counters, the sanity flags, and timing correctness on CUDA."""

from __future__ import annotations

import os
import time
import types

import pytest
import torch

from zvperf.results import sanity
from zvperf.results.derived import add_speedups
from zvperf.results.schema import BenchmarkFacts, Result
from zvperf.suite.telemetry import Telemetry, cuda_device_uuid, decode_clock_reasons, is_throttling, nvml_handle
from zvperf.suite.timing import synchronized

UUID = "8932f937-d72c-4106-c12f-20bd9faed9f6"


def fake_nvml(energy_mj: list[int], reasons: int = 0, fail: dict[str, Exception] | None = None) -> types.ModuleType:
    """An NVML with two GPUs: physical GPU 0 and ours (found by UUID), with fixed readings that differ between
    them, an energy counter that steps through ``energy_mj``, and the calls named in ``fail`` raising."""
    nvml = types.ModuleType("fake_pynvml")
    counter = iter(energy_mj)
    ours, other = f"GPU-{UUID}", "GPU-00000000-0000-0000-0000-000000000000"
    used = {other: 1 * 2**30, ours: 3 * 2**30}
    nvml.NVML_CLOCK_SM = 1
    nvml.NVML_TEMPERATURE_GPU = 0
    nvml.nvmlDeviceGetHandleByIndex = lambda index: other
    nvml.nvmlDeviceGetHandleByUUID = lambda uuid: {ours: ours}[uuid]
    nvml.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=87 if h == ours else 3, memory=40)
    nvml.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=used[h], total=80 * 2**30)
    nvml.nvmlDeviceGetComputeRunningProcesses = lambda h: [
        types.SimpleNamespace(pid=1, usedGpuMemory=2**30),
        types.SimpleNamespace(pid=os.getpid(), usedGpuMemory=2 * 2**30 if h == ours else None),
    ]
    nvml.nvmlDeviceGetPowerUsage = lambda h: 250_000  # mW
    nvml.nvmlDeviceGetClockInfo = lambda h, kind: 1755 if kind == 1 else 0
    nvml.nvmlDeviceGetTemperature = lambda h, kind: 61
    nvml.nvmlDeviceGetCurrentClocksEventReasons = lambda h: reasons
    nvml.nvmlDeviceGetTotalEnergyConsumption = lambda h: next(counter)
    for name, error in (fail or {}).items():
        setattr(nvml, name, lambda *args, error=error: (_ for _ in ()).throw(error))
    return nvml


def rounds(telemetry: Telemetry, count: int) -> None:
    for _ in range(count):
        telemetry.round_start()
        telemetry.round_end()


def test_gpu_telemetry_from_a_fake_nvml():
    # Warm-up round: 0 -> 100 mJ; timed rounds: 1000 -> 3000 and 5000 -> 9000: 8 J over the timed block.
    nvml = fake_nvml([0, 100, 1000, 3000, 5000, 9000], reasons=0x1 | 0x20)
    with Telemetry("cuda", interval=0.001, nvml=nvml, gpu_uuid=UUID) as telemetry:
        rounds(telemetry, 3)
    gpu = telemetry.summary(timed_rounds=2, audio_seconds=2.0)["gpu"]
    assert gpu["available"] is True and gpu["samples"] >= 1
    assert gpu["util_pct_mean"] == 87
    assert gpu["memory_used_mib_peak"] == 3072 and gpu["process_memory_mib_peak"] == 2048
    assert gpu["power_w_mean"] == 250 and gpu["power_w_max"] == 250
    assert "average over 1 s" in gpu["power_reading"]
    assert gpu["sm_clock_mhz_min"] == 1755 and gpu["temperature_c_max"] == 61
    assert gpu["energy_j_per_round"] == 4.0  # (9000 - 1000) mJ / 2 rounds
    assert gpu["joules_per_audio_second"] == 2.0
    assert gpu["clock_event_reasons"] == ["gpu_idle", "sw_thermal_slowdown"]
    assert gpu["throttled"] is True
    assert gpu["unavailable"] == {}


def test_the_gpu_is_found_by_its_uuid_not_by_nvmls_index():
    """NVML's index 0 is physical GPU 0 whatever CUDA_VISIBLE_DEVICES says; the UUID is this process's GPU."""
    with Telemetry("cuda", interval=0.001, nvml=fake_nvml([0, 0]), gpu_uuid=UUID) as telemetry:
        pass
    gpu = telemetry.summary(timed_rounds=0, audio_seconds=1.0)["gpu"]
    assert gpu["memory_used_mib_peak"] == 3072 and gpu["util_pct_mean"] == 87


def test_torchs_uuid_is_given_to_nvml_in_its_own_form(monkeypatch):
    class CUuuid:  # what torch.cuda.get_device_properties(i).uuid is: str() without the GPU- prefix
        def __str__(self):
            return UUID

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: types.SimpleNamespace(uuid=CUuuid()))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda: None)
    assert cuda_device_uuid() == UUID
    assert nvml_handle(fake_nvml([]), cuda_device_uuid()) == f"GPU-{UUID}"


def test_a_field_nvml_cannot_read_is_unavailable_and_the_others_go_on():
    class NVMLError_NotSupported(Exception):  # noqa: N801 - pynvml's own name
        pass

    failing = {
        "nvmlDeviceGetPowerUsage": NVMLError_NotSupported("Not Supported"),
        "nvmlDeviceGetComputeRunningProcesses": NVMLError_NotSupported("Not Supported"),
    }
    with Telemetry("cuda", interval=0.001, nvml=fake_nvml([0, 5000], fail=failing), gpu_uuid=UUID) as telemetry:
        rounds(telemetry, 1)
    gpu = telemetry.summary(timed_rounds=1, audio_seconds=1.0)["gpu"]
    assert gpu["samples"] >= 2  # the sampler kept going
    assert gpu["power_w_mean"] is None and gpu["process_memory_mib_peak"] is None
    reads = gpu["samples"]
    assert gpu["unavailable"] == {
        "power_w": f"NVMLError_NotSupported: Not Supported ({reads} of {reads} reads)",
        "process_memory_mib": f"NVMLError_NotSupported: Not Supported ({reads} of {reads} reads)",
    }
    assert gpu["util_pct_mean"] == 87 and gpu["energy_j_per_round"] == 5.0


def test_energy_is_measured_over_the_whole_timed_block():
    """The counter steps coarsely (here 1 J at a time): most single rounds see no step, so a per-round median
    would be 0 J; the block's difference over its rounds is right."""
    marks = [0, 0] + [0, 0, 0, 1000, 1000, 1000, 1000, 2000, 2000, 2000]  # a warm-up round, then 5 timed rounds
    with Telemetry("cuda", interval=0.001, nvml=fake_nvml(marks), gpu_uuid=UUID) as telemetry:
        rounds(telemetry, 6)
    gpu = telemetry.summary(timed_rounds=5, audio_seconds=1.0)["gpu"]
    assert gpu["energy_j_per_round"] == pytest.approx(0.4)  # 2 J over 5 rounds
    assert gpu["energy_block_seconds"] >= 0 and "whole timed block" in gpu["energy_method"]


def test_a_block_too_short_for_the_energy_counter_says_so():
    with Telemetry("cuda", interval=0.001, nvml=fake_nvml([7000] * 4), gpu_uuid=UUID) as telemetry:
        rounds(telemetry, 2)
    gpu = telemetry.summary(timed_rounds=2, audio_seconds=1.0)["gpu"]
    assert gpu["energy_j_per_round"] is None and gpu["joules_per_audio_second"] is None
    assert gpu["unavailable"]["energy"].startswith("the energy counter did not advance over the timed block (2 rounds")


def test_a_backend_with_its_own_allocator_reports_no_torch_memory_figure(monkeypatch):
    """torch's allocator does not see what TensorRT and ONNX Runtime allocate: their rows carry NVML's figure."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: 100 * 2**20)
    for torch_memory in (True, False):
        with Telemetry("cuda", nvml=fake_nvml([]), gpu_uuid=UUID, torch_memory=torch_memory) as telemetry:
            pass
        summary = telemetry.summary(timed_rounds=0, audio_seconds=1.0)
        assert summary.get("torch_peak_allocated_mib") == (100 if torch_memory else None)
        assert summary["gpu"]["process_memory_mib_peak"] == 2048


def test_clock_reasons_that_do_not_slow_the_chip_are_not_throttling():
    assert decode_clock_reasons(0x1 | 0x100) == ["gpu_idle", "display_clock_setting"]
    assert not is_throttling(decode_clock_reasons(0x1 | 0x100))
    assert is_throttling(decode_clock_reasons(0x4))


def test_telemetry_without_nvml_says_unavailable_and_records_the_cpu(monkeypatch):
    monkeypatch.setattr("zvperf.suite.telemetry.load_nvml", lambda: (None, "nvidia-ml-py (pynvml) is not installed"))
    with Telemetry("cuda") as telemetry:
        sum(i * i for i in range(200_000))
    summary = telemetry.summary(timed_rounds=1, audio_seconds=1.0)
    assert summary["gpu"] == {"available": False, "reason": "nvidia-ml-py (pynvml) is not installed"}
    assert summary["cpu"]["process_cpu_seconds"] > 0 and summary["cpu"]["rss_mib_peak"] > 10


def result(config_id: str, kind: str, median: float, *, model="zipvoice", steps=16, data=None, **extra) -> Result:
    nfe = {"zipvoice": 2, "zipvoice_distill": 1}[model] * steps
    info = {
        "kind": kind, "model": model, "num_step": steps, "backend": "torch", "precision": "fp32", "device": "cuda",
        "weights": "official", "frames": 100, "audio_seconds": 1.0, "rtf": median, "ms_per_nfe": None,
        "speedup_vs_zipvoice16": None, "nfe": nfe, "frames_bucket": None, "telemetry": {}, "flags": [], **extra,
    }  # fmt: skip
    values = data or [median] * 5
    facts = BenchmarkFacts.from_dict(info)
    return Result(f"test_{kind}[{config_id}]", config_id, facts, {"median": median, "iqr": 0.0}, values)


def test_the_guides_16_step_row_is_flagged_as_an_nfe_outlier():
    # The optimization guide's model-inference times (ms): 48395 / 32 evaluations is 6.3x the 4-step row's
    # 1919 / 8 (and 5.4x the 8-step row's 4498 / 16, which is itself within 1.2x of the 4-step row).
    rows = [
        result("zipvoice-16step", "solver", 48.395, steps=16),
        result("zipvoice-8step", "solver", 4.498, steps=8),
        result("zipvoice-4step", "solver", 1.919, steps=4),
    ]
    sanity.check(rows)
    assert rows[0].flags == ("nfe-outlier: 6.3x the time per decoder evaluation of the 4-step row",)
    assert rows[1].flags == () and rows[2].flags == ()


def test_consistent_step_counts_are_not_flagged():
    rows = [result(f"d-{s}step", "solver", 0.1 * s + 0.005, model="zipvoice_distill", steps=s) for s in (8, 4, 2)]
    sanity.check(rows)
    assert all(r.flags == () for r in rows)


def test_more_evaluations_in_less_time_is_flagged_non_monotonic():
    rows = [result("a-8", "solver", 0.70, steps=8), result("a-4", "solver", 0.75, steps=4)]
    sanity.check(rows)
    assert any(f.startswith("non-monotonic: 16 evaluations took less time than 8") for f in rows[0].flags)


def test_noisy_and_throttled_runs_are_flagged():
    noisy = result("n", "e2e", 1.0, data=[0.8, 0.9, 1.0, 1.2, 1.3])
    noisy.stats["iqr"] = 0.3
    hot = result("h", "e2e", 1.0, telemetry={"gpu": {"throttled": True, "clock_event_reasons": ["hw_slowdown"]}})
    calm = result("c", "e2e", 1.0)
    sanity.check([noisy, hot, calm])
    assert noisy.flags == ("noisy: IQR is 30% of the median (limit 10%)",)
    assert hot.flags == ("throttled: the GPU slowed its clocks during the run (hw_slowdown)",)
    assert calm.flags == ()


def test_speedups_use_the_zipvoice_16_step_row_of_the_same_kind():
    rows = [
        result("z16", "solver", 2.0),
        result("d4", "solver", 0.5, model="zipvoice_distill", steps=4),
        result("z16", "e2e", 4.0),
        result("d4", "e2e", 1.0, model="zipvoice_distill", steps=4),
    ]
    add_speedups(rows)
    assert [r.facts.speedup_vs_zipvoice16 for r in rows] == [1.0, 4.0, 1.0, 4.0]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to time queued GPU work")
def test_timing_a_cuda_call_includes_the_gpu_work():
    """The synchronisation is inside the timed call: its wall time covers the GPU time CUDA events measure,
    while the same call without it returns after launching only."""
    a = torch.randn(4096, 4096, device="cuda")

    def work():
        for _ in range(20):
            a @ a

    work()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    work()
    end.record()
    torch.cuda.synchronize()
    gpu_seconds = start.elapsed_time(end) / 1e3

    timed = synchronized(work, "cuda")
    t0 = time.perf_counter()
    timed()
    synced = time.perf_counter() - t0

    t0 = time.perf_counter()
    work()
    launch_only = time.perf_counter() - t0
    torch.cuda.synchronize()
    assert synced >= 0.9 * gpu_seconds
    assert launch_only < 0.5 * gpu_seconds


def test_rows_of_backends_with_their_own_allocator_report_nvmls_process_memory():
    own = result("z16", "e2e", 1.0, telemetry={"gpu": {"process_memory_mib_peak": 2048.0, "memory_used_mib_peak": 9e3}})
    torch_row = result("z16", "e2e", 1.0, telemetry={"torch_peak_allocated_mib": 1200.0, "gpu": {}})
    assert own.facts.peak_memory_mib == 2048.0 and torch_row.facts.peak_memory_mib == 1200.0
