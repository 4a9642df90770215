"""cudagraph: the whole Euler loop captured as one CUDA graph per shape bucket and schedule.

A solve is then one graph launch instead of ~1,500 kernel launches per step. Each capture is keyed
by everything that fixes the graph (batch, frames, dtype, step count, shift, guidance kind); a new
solve copies its inputs into the captured buffers and replays. The graphs of one solver share one memory
pool (they are replayed one at a time, on one stream, and each keeps its output buffer), so a benchmark
that captures several shapes holds one pool's worth of temporaries, and all of it goes with the solver.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from zvperf.backends.stepping import StepFunction
from zvperf.engine.models import SolvePlan, ZipVoice

WARMUP_RUNS = 2  # eager runs on a side stream before capture, as CUDA graph capture requires


class _Captured:
    """One captured loop: static copies of a plan's tensors, the graph, and its output buffer."""

    def __init__(
        self, plan: SolvePlan, step: StepFunction, x0: torch.Tensor, pool: Any, stream: torch.cuda.Stream
    ) -> None:
        self.static = copy.copy(plan)
        buffers: dict[int, torch.Tensor] = {}
        self.static.constants = [buffers.setdefault(id(c), c.clone()) for c in plan.constants]
        self.distinct = list(buffers.values())
        self.static.mask = plan.mask.clone() if plan.mask is not None else None
        self.static.conditioning = plan.conditioning.clone()
        self.static.coefficients = plan.coefficients.clone()
        self.x0 = x0.clone()
        # Warmed up on the capture stream, a side stream as capture requires: each new stream would get its own
        # cuBLAS workspace from torch, kept for the stream's lifetime (about 36 MB each on an H100).
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(WARMUP_RUNS):
                self.static.run(step, self.x0)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        # One capture stream for every graph of a pool, as torch asks of captures that share one.
        with torch.cuda.graph(self.graph, pool=pool, stream=stream):
            self.output = self.static.run(step, self.x0)

    def replay(self, plan: SolvePlan, x0: torch.Tensor) -> torch.Tensor:
        distinct = list({id(c): c for c in plan.constants}.values())
        for buffer, value in zip(self.distinct, distinct, strict=True):
            buffer.copy_(value)
        if plan.mask is not None and self.static.mask is not None:  # the key says both have one or neither
            self.static.mask.copy_(plan.mask)
        self.static.conditioning.copy_(plan.conditioning)
        self.static.coefficients.copy_(plan.coefficients)
        self.x0.copy_(x0)
        self.graph.replay()
        return self.output.clone()


class GraphSolver:
    """Callable like :meth:`ZipVoice.solve`: capture on the first solve of each kind, replay after. The captured
    step is the plan's own :class:`DecoderStep`, or ``step_for(guided)`` where given (the compiled step)."""

    def __init__(self, model: ZipVoice, step_for: Callable[[bool], StepFunction] | None = None) -> None:
        self.model = model
        self.step_for = step_for
        self.captured: dict[tuple, _Captured] = {}
        self.pool = torch.cuda.graph_pool_handle()
        self.capture_stream = torch.cuda.Stream()

    def __call__(
        self,
        x0: torch.Tensor,
        text_condition: torch.Tensor,
        speech_condition: torch.Tensor,
        padding_mask: torch.Tensor | None,
        num_step: int,
        guidance_scale: float,
        t_shift: float = 0.5,
    ) -> torch.Tensor:
        plan = SolvePlan(self.model, text_condition, speech_condition, padding_mask, num_step, guidance_scale, t_shift)
        # Which steps share a constant (the schedule's halves under guidance) is part of the graph too.
        pattern = tuple(next(i for i, c in enumerate(plan.constants) if c is d) for d in plan.constants)
        key = (tuple(x0.shape), x0.dtype, num_step, t_shift, plan.guided, pattern, plan.mask is None)
        if key not in self.captured:
            step = self.step_for(plan.guided) if self.step_for else plan.step_module
            self.captured[key] = _Captured(plan, step, x0, self.pool, self.capture_stream)
        return self.captured[key].replay(plan, x0)


@dataclasses.dataclass(frozen=True)
class CudaGraphs:
    name: str = "cudagraph"
    precisions: tuple[str, ...] = ("fp32", "fp16", "bf16")
    devices: tuple[str, ...] = ("cuda",)

    def unavailable(self, device: str, precision: str) -> str | None:
        return None

    def prepare(self, model: ZipVoice, device: str, precision: str) -> GraphSolver:
        return GraphSolver(model)


BACKENDS = [CudaGraphs()]
