"""Timing a call correctly with pytest-benchmark's pedantic mode.

pytest-benchmark reads its clock at round boundaries; the target given to it here ends with a
device synchronisation, so on CUDA a round is charged for the GPU work it queued, not for the
launches. Each round's untimed setup synchronises first, so no earlier work leaks into the next
round, and marks the round for the telemetry's energy counter.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from zvperf.engine.device import synchronize
from zvperf.suite.telemetry import Telemetry


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
) -> Any:
    """Time ``fn`` with ``benchmark.pedantic`` (one call per round); returns the last result."""

    def setup() -> None:
        synchronize(device)
        telemetry.round_start()

    def teardown() -> None:
        telemetry.round_end()

    return benchmark.pedantic(
        synchronized(fn, device, slowdown),
        setup=setup,
        teardown=teardown,
        rounds=rounds,
        warmup_rounds=warmup_rounds,
        iterations=1,
    )
