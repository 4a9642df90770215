"""torch: the engine's own eager PyTorch solve, in fp32, fp16 or bf16.

On the CPU its fp32 linear layers run through oneDNN on packed weights (zvperf.engine.onednn): the same
arithmetic as the model's own solve, in another order of additions, and checked against it like any backend.
Half precisions run on the CPU only where it has native instructions for them.
"""

from __future__ import annotations

from zvperf.engine.device import cpu_half_missing
from zvperf.engine.models import ZipVoice
from zvperf.engine.onednn import OneDnnSolver, onednn_available
from zvperf.engine.solver import Solver


class TorchEager:
    name = "torch"
    precisions = ("fp32", "fp16", "bf16")
    devices = ("cpu", "cuda")

    def unavailable(self, device: str, precision: str) -> str | None:
        return cpu_half_missing(precision) if device == "cpu" else None

    def prepare(self, model: ZipVoice, device: str, precision: str) -> Solver:
        if device == "cpu" and precision == "fp32" and onednn_available():
            return OneDnnSolver(model.solve)
        return model.solve


BACKENDS = [TorchEager()]
