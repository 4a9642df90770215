"""Timing a call correctly with pytest-benchmark's pedantic mode.

pytest-benchmark reads its clock at round boundaries; the target given to it here ends with a
device synchronisation, so on CUDA a round is charged for the GPU work it queued, not for the
launches. Each round's untimed setup synchronises first, so no earlier work leaks into the next
round, and marks the round for the telemetry's energy counter.

Under a stopping rule (the gate matrix's, ``zvperf.suite.matrix.Stopping``) a row's first rounds are
pedantic's; then rounds timed the same way, each added to pytest-benchmark's own statistics, follow one by
one until the median is known to the rule's precision, or the rounds reach the time cap or the most rounds a
baseline stores. nvbench stops on the relative standard deviation of its samples; the median's interval is
its counterpart for the gate, which compares medians and rank statistics and whose round times are skewed.

On a CPU, those rows also time a fixed workload (:class:`HostReference`: matrix products of a fixed shape in the
row's precision) before each round, outside the round's timing: a shared host's speed drifts by 10-25% over
minutes, alike for every row timed at that time (docs/calibration.md), and the gate judges a row's median over
that reference's, its own code's speed with the host's taken out (``zvperf.gate.judge``).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from zvperf.engine.device import synchronize
from zvperf.gate.stats import median_spread
from zvperf.suite.matrix import Stopping
from zvperf.suite.telemetry import Telemetry

PRECISE, TIME_CAP, MAX_ROUNDS = "precise", "time cap", "max rounds"


@dataclasses.dataclass(frozen=True)
class Stopped:
    """Why a row's rounds ended: what its results keep as ``stopping``."""

    reason: str  # PRECISE, TIME_CAP or MAX_ROUNDS
    median_spread: float  # the half-width of the median's 95% interval over the median, at the end
    precision: float
    time_cap_s: float

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class HostReference:
    """A fixed CPU workload timed beside a row's rounds: products of a [1024, 512] by [512, 2048] matrix (the
    decoder's feed-forward shape) in the row's precision, on the row's threads, about 25 ms on a 2-core Xeon with
    AMX. Its code is torch's and never the code under test, so a change to zvperf or ZipVoice does not move it,
    and the host's speed does."""

    SHAPE = (1024, 512, 2048)

    def __init__(self, dtype: torch.dtype) -> None:
        m, k, n = self.SHAPE
        self.repeats = 4 if dtype == torch.float32 else 16  # half precision: about 5 times faster where native
        generator = torch.Generator().manual_seed(0)
        self.a = torch.randn(m, k, generator=generator).to(dtype)
        self.b = torch.randn(k, n, generator=generator).to(dtype)
        self.seconds: list[float] = []
        self.workload = f"{self.repeats} x [{m}x{k}]@[{k}x{n}] {str(dtype).removeprefix('torch.')} matrix products"

    def time(self) -> None:
        with torch.inference_mode():
            start = time.perf_counter()
            for _ in range(self.repeats):
                torch.mm(self.a, self.b)
            self.seconds.append(time.perf_counter() - start)

    def as_dict(self) -> dict[str, Any]:
        """What its results keep as ``host_reference``: the workload, each timing and their median."""
        return {"workload": self.workload, "seconds": self.seconds, "median": statistics.median(self.seconds)}


# A row whose call takes less than this many references' time is called again after the reference (``measure``):
# for longer calls, refilling the caches is a small part of the round (2.6 ms of the text encoder's 18% is 0.5% of a
# 0.5 s call), and an extra call would double the row's time.
REWARM_BELOW = 20


def stop_reason(data: list[float], rule: Stopping) -> str | None:
    """Why rounds ``data`` are enough under ``rule`` (the first that holds of PRECISE, TIME_CAP, MAX_ROUNDS), or
    None: time another."""
    if median_spread(data) <= rule.precision:
        return PRECISE
    if sum(data) >= rule.time_cap_s:
        return TIME_CAP
    if len(data) >= rule.max_rounds:
        return MAX_ROUNDS
    return None


def synchronized(fn: Callable[[], Any], device: str, slowdown: float = 0.0) -> Callable[[], Any]:
    """``fn`` followed by a device synchronisation, inside the timed region.

    ``slowdown`` > 0 delays the return by that fraction of the call's own duration: the injected
    regression the gate's tests and ``zvperf calibrate`` use to prove the gate catches one.
    """

    def timed() -> Any:
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        if slowdown > 0:
            time.sleep((time.perf_counter() - start) * slowdown)
        return result

    return timed


def measure(
    benchmark: Any,
    fn: Callable[[], Any],
    *,
    device: str,
    rounds: int,
    warmup_rounds: int,
    telemetry: Telemetry,
    slowdown: float = 0.0,
    stopping: Stopping | None = None,
    reference: HostReference | None = None,
) -> tuple[Any, Stopped | None]:
    """Time ``fn`` with ``benchmark.pedantic`` (one call per round), then under ``stopping`` round by round until
    it stops; returns the last result and why the rounds stopped (None: a fixed count). ``reference`` is timed
    before each round (warm-up rounds too), untimed by the round; a row whose calls are short is then called once
    more, untimed, before its round: the reference's matrices evict its data, and the 15 ms text encoder ran 18%
    slower right after them (docs/calibration.md)."""
    last_call = float("inf")  # the last timed call's seconds, to tell a short row (none yet: not short)

    def setup() -> None:
        synchronize(device)
        if reference is not None:
            reference.time()
            if last_call < REWARM_BELOW * reference.seconds[-1]:
                fn()
                synchronize(device)
        telemetry.round_start()

    def teardown() -> None:
        telemetry.round_end()

    slowed = synchronized(fn, device, slowdown)

    def timed() -> Any:
        nonlocal last_call
        start = time.perf_counter()
        result = slowed()
        last_call = time.perf_counter() - start
        return result

    result = benchmark.pedantic(
        timed, setup=setup, teardown=teardown, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1
    )
    if stopping is None:
        return result, None
    stats = benchmark.stats  # pytest-benchmark's statistics of this row, which the added rounds join
    while (reason := stop_reason(stats.stats.data, stopping)) is None:
        setup()
        start = time.perf_counter()  # pytest-benchmark's default timer
        result = timed()
        stats.update(time.perf_counter() - start)
        teardown()
    return result, Stopped(reason, median_spread(stats.stats.data), stopping.precision, stopping.time_cap_s)
