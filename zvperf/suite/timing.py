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
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

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
) -> tuple[Any, Stopped | None]:
    """Time ``fn`` with ``benchmark.pedantic`` (one call per round), then under ``stopping`` round by round until
    it stops; returns the last result and why the rounds stopped (None: a fixed count)."""

    def setup() -> None:
        synchronize(device)
        telemetry.round_start()

    def teardown() -> None:
        telemetry.round_end()

    timed = synchronized(fn, device, slowdown)
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
