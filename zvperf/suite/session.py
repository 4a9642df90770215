"""One pytest session's benchmark state: the options, the engine cache, and the benchmarks timed so far."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch

from zvperf.backends.checkout import CheckoutError
from zvperf.engine.config import ModelConfig
from zvperf.errors import ZvperfError
from zvperf.suite.engines import Engine, EngineCache, VerificationError
from zvperf.suite.gemm import attainable_rate
from zvperf.suite.matrix import Combo, Config
from zvperf.suite.options import BenchOptions


@dataclasses.dataclass
class BenchSession:
    options: BenchOptions
    cache: EngineCache
    benchmarks: list[Any] = dataclasses.field(default_factory=list)  # pytest-benchmark fixtures, in run order
    # The attainable matrix-multiply rate per precision (zvperf.suite.gemm), measured once, when first needed.
    gemm: dict[str, dict[str, Any] | None] = dataclasses.field(default_factory=dict)

    def limits(self, config: ModelConfig, precision: str) -> tuple[float | None, float | None]:
        """(the machine's attainable GEMM rate, the chip's dense peak) in FLOP/s in ``precision``: the rate measured
        at the decoder's shapes on first use (outside timing; the first model's configuration gives the shapes),
        and on CUDA the peak from the chip's facts; None where there is none."""
        if precision not in self.gemm:
            self.gemm[precision] = attainable_rate(config, self.options.device, precision)
        measured = self.gemm[precision]
        if not measured:
            return None, None
        return measured["flop_rate"], (measured.get("peak") or {}).get("flop_rate")

    @contextmanager
    def out_of_memory_skips(self, what: str) -> Iterator[None]:
        """Running out of device memory ``what`` (building, running, timing) releases the engine and skips the
        benchmark with the allocator's message: the next configuration still gets the whole device."""
        try:
            yield
        except torch.cuda.OutOfMemoryError as exc:
            self.cache.release()
            pytest.skip(f"out of memory {what}: {str(exc).splitlines()[0]}")

    def engine(self, config: Config) -> Engine:
        """The built engine, or a skip with the reason it cannot run here (never a failure)."""
        if self.options.device_problem:
            pytest.skip(self.options.device_problem)
        with self.out_of_memory_skips(f"building {config.id}"):
            try:
                return self.cache.get(config)
            except CheckoutError as exc:
                pytest.fail(str(exc), pytrace=False)
            except ZvperfError as exc:
                pytest.skip(str(exc))

    @contextmanager
    def verification_fails(self) -> Iterator[None]:
        """A check against zvperf's torch fp32 that finds a difference fails the benchmark with the measured error
        (never timed); one that cannot run here (a shape the backend cannot take) skips it."""
        failed = skipped = None
        with self.out_of_memory_skips("while verifying"):
            try:
                yield
            except VerificationError as exc:
                failed = str(exc)
            except ZvperfError as exc:
                skipped = str(exc)
        # This generator runs inside the with statement's __exit__, where the caught error is still the one being
        # handled: "from None" keeps it out of the report, which shows the difference once.
        if failed is not None:
            raise pytest.fail.Exception(failed, pytrace=False) from None
        if skipped is not None:
            raise pytest.skip.Exception(skipped) from None

    def verified_engine(self, combo: Combo) -> Engine:
        """The engine, its solve checked against torch fp32 at this shape (``verification_fails``)."""
        engine = self.engine(combo.config)
        with self.verification_fails():
            engine.verify(combo.frames, combo.batch, combo.num_step)
        return engine
