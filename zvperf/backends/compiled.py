"""compile: the decoder step through torch.compile (Inductor), one compiled graph per kind of step.

Compilation happens on the first call of each input shape; the benchmark's warm-up rounds absorb it
and the cold-start benchmark measures it.
"""

from __future__ import annotations

import dataclasses
import shutil

import torch

from zvperf.backends.stepping import StepFunction, StepSolver
from zvperf.engine.device import cpu_half_missing
from zvperf.engine.models import DecoderStep, ZipVoice


@dataclasses.dataclass(frozen=True)
class Compiled:
    name: str = "compile"
    precisions: tuple[str, ...] = ("fp32", "fp16", "bf16")
    devices: tuple[str, ...] = ("cpu", "cuda")

    def unavailable(self, device: str, precision: str) -> str | None:
        if device == "cpu" and shutil.which("g++") is None and shutil.which("c++") is None:
            return "torch.compile on the CPU needs a C++ compiler (none on PATH)"
        return cpu_half_missing(precision) if device == "cpu" else None

    def prepare(self, model: ZipVoice, device: str, precision: str) -> StepSolver:
        steps: dict[bool, StepFunction] = {}

        def step_for(guided: bool) -> StepFunction:
            if guided not in steps:
                module = DecoderStep(model.fm_decoder, model.feat_dim, guided)
                steps[guided] = torch.compile(module, dynamic=False)
            return steps[guided]

        return StepSolver(model, step_for)


BACKENDS = [Compiled()]
