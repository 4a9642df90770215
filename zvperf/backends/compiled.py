"""compile, compile-graph: the decoder step through torch.compile (Inductor), one compiled graph per kind of step.

The step is compiled dynamic in frames and batch: one graph serves every length and every step a benchmark times
(a batch of one and larger batches are two; tests/test_backends.py counts the compilations). Compilation happens
on the first call of a new graph; the benchmark's warm-up rounds absorb it and the cold-start benchmark measures
it. Past dynamo's recompile limit torch.compile would quietly run the step eagerly; here that is an error that
says so. What Inductor builds is kept between processes (zvperf.backends.compile_cache): loaded before the first
compile, saved after each call that compiled a new graph, so a second process on the machine skips code generation.

compile-graph (CUDA) captures the compiled step with the whole Euler loop in one CUDA graph per shape
(zvperf.backends.cuda_graph): Inductor's kernels without their launch cost. Unproven until a GPU runs it. Shapes
stay symbolic rather than static length buckets: padding an utterance to a bucket changes the model's output (333
frames padded to 384 moved x1 by 0.48 relative), so every length is its own capture of the one compiled graph.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.fx.experimental._config as fx_config
from torch._dynamo.utils import counters

from zvperf.backends import compile_cache
from zvperf.backends.cuda_graph import GraphSolver
from zvperf.backends.stepping import StepFunction, StepSolver
from zvperf.engine.device import cpu_half_missing
from zvperf.engine.models import DecoderStep, ZipVoice
from zvperf.engine.solver import Solver


class FellBackToEager(RuntimeError):
    """torch.compile stopped compiling and ran the step eagerly: the compile row would not time compiled code.

    Not a ZvperfError on purpose: a benchmark that meets it fails instead of skipping.
    """


class CompiledSolver:
    """Callable like :meth:`ZipVoice.solve`: ``inner`` (a solver running the compiled step) whose solves fail, rather
    than run eagerly, when dynamo hits its recompile limit, and that keeps what it compiled in ``kept`` (a compile
    cache file; None: nothing kept)."""

    def __init__(self, inner: Solver, kept: Path | None) -> None:
        self.inner = inner
        self.kept = kept

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        graphs = counters["stats"]["unique_graphs"]
        try:
            # Without duck shaping: a frame count equal to a fixed size of the model (100 frames, the 100 feature
            # channels) was given that size's symbol, specialised to it, and the next length compiled again.
            with (
                torch._dynamo.config.patch(fail_on_recompile_limit_hit=True),
                fx_config.patch(use_duck_shape=False),  # type: ignore[attr-defined]  # installed at import
            ):
                x1 = self.inner(*args, **kwargs)
        except torch._dynamo.exc.FailOnRecompileLimitHit as exc:
            limit = torch._dynamo.config.recompile_limit
            raise FellBackToEager(
                f"compile: torch.compile fell back to eager: the decoder step needed more than {limit} compiled "
                "graphs (dynamo's recompile limit), so later shapes would run uncompiled"
            ) from exc
        if self.kept is not None and counters["stats"]["unique_graphs"] != graphs:
            compile_cache.save(self.kept)
        return x1


@dataclasses.dataclass(frozen=True)
class Compiled:
    name: str = "compile"
    precisions: tuple[str, ...] = ("fp32", "fp16", "bf16")
    devices: tuple[str, ...] = ("cpu", "cuda")
    # What compiles the captured graph: Inductor, or (in tests) a wrapper around a backend that counts its calls.
    compiler: str | Callable[..., Any] = "inductor"
    keeps_build: bool = True  # what Inductor builds is kept in zvperf's cache for the next process
    graphs: bool = False  # compile-graph: the compiled step inside the whole loop's CUDA graph (cuda_graph)

    def unavailable(self, device: str, precision: str) -> str | None:
        if device == "cpu" and shutil.which("g++") is None and shutil.which("c++") is None:
            return "torch.compile on the CPU needs a C++ compiler (none on PATH)"
        return cpu_half_missing(precision) if device == "cpu" else None

    def prepare(self, model: ZipVoice, device: str, precision: str) -> CompiledSolver:
        steps: dict[bool, StepFunction] = {}

        def step_for(guided: bool) -> StepFunction:
            if guided not in steps:
                module = DecoderStep(model.fm_decoder, model.feat_dim, guided)
                steps[guided] = torch.compile(module, dynamic=True, fullgraph=True, backend=self.compiler)
            return steps[guided]

        kept = None
        if self.compiler == "inductor":  # the cache holds Inductor's products; a test's counting compiler has none
            kept = compile_cache.cache_file(model, device, precision)
            compile_cache.load(kept)
        inner = GraphSolver(model, step_for) if self.graphs else StepSolver(model, step_for)
        return CompiledSolver(inner, kept)


BACKENDS = [Compiled(), Compiled("compile-graph", devices=("cuda",), graphs=True)]
