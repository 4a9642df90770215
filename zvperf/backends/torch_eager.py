"""torch: the engine's own eager PyTorch solve, in fp32, fp16 or bf16."""

from __future__ import annotations

from zvperf.engine.models import ZipVoice
from zvperf.engine.solver import Solver


class TorchEager:
    name = "torch"
    precisions = ("fp32", "fp16", "bf16")
    devices = ("cpu", "cuda")

    def unavailable(self, device: str, precision: str) -> str | None:
        return None

    def prepare(self, model: ZipVoice, device: str, precision: str) -> Solver:
        return model.solve


BACKENDS = [TorchEager()]
