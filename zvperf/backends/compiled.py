"""compile: the decoder step through torch.compile (Inductor), one compiled graph per kind of step.

The step is compiled dynamic in frames and batch: one graph serves every length and every step a benchmark times
(a batch of one and larger batches are two; tests/test_backends.py counts the compilations). Compilation happens
on the first call of a new graph; the benchmark's warm-up rounds absorb it and the cold-start benchmark measures
it. Past dynamo's recompile limit torch.compile would quietly run the step eagerly; here that is an error that
says so.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from typing import Any

import torch
import torch.fx.experimental._config as fx_config

from zvperf.backends.stepping import StepFunction, StepSolver
from zvperf.engine.device import cpu_half_missing
from zvperf.engine.models import DecoderStep, ZipVoice


class FellBackToEager(RuntimeError):
    """torch.compile stopped compiling and ran the step eagerly: the compile row would not time compiled code.

    Not a ZvperfError on purpose: a benchmark that meets it fails instead of skipping.
    """


class CompiledSolver(StepSolver):
    """A :class:`StepSolver` whose solves fail, rather than run eagerly, when dynamo hits its recompile limit."""

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        try:
            # Without duck shaping: a frame count equal to a fixed size of the model (100 frames, the 100 feature
            # channels) was given that size's symbol, specialised to it, and the next length compiled again.
            with (
                torch._dynamo.config.patch(fail_on_recompile_limit_hit=True),
                fx_config.patch(use_duck_shape=False),  # type: ignore[attr-defined]  # installed at import
            ):
                return super().__call__(*args, **kwargs)
        except torch._dynamo.exc.FailOnRecompileLimitHit as exc:
            limit = torch._dynamo.config.recompile_limit
            raise FellBackToEager(
                f"compile: torch.compile fell back to eager: the decoder step needed more than {limit} compiled "
                "graphs (dynamo's recompile limit), so later shapes would run uncompiled"
            ) from exc


@dataclasses.dataclass(frozen=True)
class Compiled:
    name: str = "compile"
    precisions: tuple[str, ...] = ("fp32", "fp16", "bf16")
    devices: tuple[str, ...] = ("cpu", "cuda")
    # What compiles the captured graph: Inductor, or (in tests) a wrapper around a backend that counts its calls.
    compiler: str | Callable[..., Any] = "inductor"

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

        return CompiledSolver(model, step_for)


BACKENDS = [Compiled()]
