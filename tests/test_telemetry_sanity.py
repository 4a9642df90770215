"""Telemetry against a fake NVML with known counters, the sanity flags, and timing correctness on CUDA."""

from __future__ import annotations

import time
import types

import pytest
import torch

from zvperf.results import sanity
from zvperf.results.derived import add_speedups
from zvperf.results.schema import BenchmarkFacts, Result
from zvperf.suite.telemetry import Telemetry, decode_clock_reasons, is_throttling
from zvperf.suite.timing import synchronized


def fake_nvml(energy_mj: list[int], reasons: int = 0) -> types.ModuleType:
    """An NVML with fixed readings and an energy counter that steps through ``energy_mj``."""
    nvml = types.ModuleType("fake_pynvml")
    counter = iter(energy_mj)
    nvml.NVML_CLOCK_SM = 1
    nvml.NVML_TEMPERATURE_GPU = 0
    nvml.nvmlDeviceGetHandleByIndex = lambda index: f"gpu{index}"
    nvml.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=87, memory=40)
    nvml.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=3 * 2**30, total=80 * 2**30)
    nvml.nvmlDeviceGetPowerUsage = lambda h: 250_000  # mW
    nvml.nvmlDeviceGetClockInfo = lambda h, kind: 1755 if kind == 1 else 0
    nvml.nvmlDeviceGetTemperature = lambda h, kind: 61
    nvml.nvmlDeviceGetCurrentClocksEventReasons = lambda h: reasons
    nvml.nvmlDeviceGetTotalEnergyConsumption = lambda h: next(counter)
    return nvml


def test_gpu_telemetry_from_a_fake_nvml():
    # Warm-up round: 0 -> 100 mJ; timed rounds: 1000 -> 3000 (2 J) and 5000 -> 9000 (4 J).
    nvml = fake_nvml([0, 100, 1000, 3000, 5000, 9000], reasons=0x1 | 0x20)
    with Telemetry("cuda", interval=0.001, nvml=nvml) as telemetry:
        for _ in range(3):
            telemetry.round_start()
            telemetry.round_end()
    gpu = telemetry.summary(timed_rounds=2, audio_seconds=2.0)["gpu"]
    assert gpu["available"] is True and gpu["samples"] >= 1
    assert gpu["util_pct_mean"] == 87
    assert gpu["memory_used_mib_peak"] == 3072
    assert gpu["power_w_mean"] == 250 and gpu["power_w_max"] == 250
    assert gpu["sm_clock_mhz_min"] == 1755 and gpu["temperature_c_max"] == 61
    assert gpu["energy_j_per_round"] == 3.0  # median of the two timed rounds
    assert gpu["joules_per_audio_second"] == 1.5
    assert gpu["clock_event_reasons"] == ["gpu_idle", "sw_thermal_slowdown"]
    assert gpu["throttled"] is True


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
