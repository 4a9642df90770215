"""fp32 linear layers through oneDNN on the CPU, with weights packed once.

torch's CPU ``F.linear`` in fp32 calls MKL's sgemm, which on AMD CPUs runs at less than half the rate of
oneDNN's (105 vs 250 GFLOP/s per thread at the decoder's 843x512x1536 product on a Zen 5; torch already uses
oneDNN for bf16). Inside :class:`OneDnnLinears` every fp32 CPU linear runs as oneDNN's inner product on a
weight packed once into its blocked layout (what Inductor's weight prepacking does); everything else runs
as it would. The full-size decoder step took 0.93 instead of 1.61 s per evaluation (one thread, 843 frames),
with results within 1e-5 of MKL's (both are fp32; they differ in the order of additions).

``torch.ops.mkldnn._linear_pointwise`` and ``_reorder_linear_weight`` are the (private) operators Inductor
emits for packed linears; torch has no public switch that sends fp32 linears to oneDNN in IEEE fp32.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from zvperf.engine.solver import Solver


def onednn_available() -> bool:
    """Whether this torch has oneDNN's packed linear operators."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class OneDnnLinears(TorchFunctionMode):
    """Within the block, fp32 CPU ``F.linear`` (and so ``nn.Linear``) calls oneDNN on packed weights.

    Packed weights are kept for the mode's lifetime, keyed by the weight's memory, shape and strides (a slice
    of a weight, as the decoder's input projection takes, is packed once too): use one mode per model.
    """

    def __init__(self) -> None:
        super().__init__()
        self.packed: dict[tuple[int, tuple[int, ...], tuple[int, ...]], torch.Tensor] = {}

    def pack(self, weight: torch.Tensor) -> torch.Tensor:
        key = (weight.data_ptr(), tuple(weight.shape), tuple(weight.stride()))
        if key not in self.packed:
            self.packed[key] = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), None)
        return self.packed[key]

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight = args[0], args[1]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if x.dtype == weight.dtype == torch.float32 and x.device.type == "cpu" and not torch.is_grad_enabled():
                return torch.ops.mkldnn._linear_pointwise(x, self.pack(weight), bias, "none", [], "")
        return func(*args, **kwargs)


class OneDnnSolver:
    """A model's own eager solve with its fp32 linears through oneDNN (callable like ``ZipVoice.solve``)."""

    def __init__(self, solve: Solver) -> None:
        self.solve = solve
        self.mode = OneDnnLinears()

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        with self.mode:
            return self.solve(*args, **kwargs)
