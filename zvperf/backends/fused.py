"""fused, fused-graph: the torch and cudagraph backends with SwooshL, SwooshR and BiasNorm as one Triton kernel each.

The engine's eager solve (``fused``) and its CUDA-graph solve (``fused-graph``, zvperf.backends.cuda_graph) run with
the fused kernels switched on (zvperf.engine.fused): the same model and arithmetic, with 4 to 11 elementwise and
cast kernels per activation or norm replaced by one. CUDA only, and unproven until a GPU has run them: on the CPU
the kernels run only under Triton's interpreter, which is how the tests check them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from zvperf.backends.cuda_graph import CudaGraphs
from zvperf.backends.torch_eager import TorchEager
from zvperf.engine import fused
from zvperf.engine.models import ZipVoice
from zvperf.engine.solver import Solver


class FusedSolver:
    """Callable like :meth:`ZipVoice.solve`: ``inner`` with the fused kernels switched on, so that a CUDA graph
    solver captures them on its first solve of each shape."""

    def __init__(self, inner: Solver) -> None:
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        with fused.fused_kernels():
            return self.inner(*args, **kwargs)


@dataclasses.dataclass(frozen=True)
class Fused:
    name: str
    base: TorchEager | CudaGraphs  # the backend whose solver runs with the kernels switched on
    devices: tuple[str, ...] = ("cuda",)

    @property
    def precisions(self) -> tuple[str, ...]:
        return self.base.precisions

    def unavailable(self, device: str, precision: str) -> str | None:
        return fused.unavailable() or self.base.unavailable(device, precision)

    def prepare(self, model: ZipVoice, device: str, precision: str) -> FusedSolver:
        return FusedSolver(self.base.prepare(model, device, precision))


BACKENDS = [Fused("fused", TorchEager()), Fused("fused-graph", CudaGraphs())]
