"""The switch for the fused Triton kernels of SwooshL, SwooshR, BiasNorm and the attention's score set-up
(zvperf.engine.fused_kernels).

Off by default: the engine's ``swoosh_l``, ``swoosh_r``, ``BiasNorm.forward`` and ``AttentionWeights.forward`` then
run exactly as they always have (one flag read per call). Inside :func:`fused_kernels` they call the fused custom
ops instead, one kernel each where the eager path launches 4 to 11. Triton is imported only when the kernels are
first switched on, so the engine imports and runs without it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from collections.abc import Iterator

import torch
from torch import Tensor

from zvperf.errors import ZvperfError

# A module global rather than a ContextVar: dynamo cannot read a ContextVar (a graph break, which fails the compile
# backend's fullgraph), while a global it reads is guarded, so a compiled step follows the switch. No solve runs
# on two threads at once, so a process-wide switch is enough.
_active = False


def active() -> bool:
    """Whether the engine's activations and norms run through the fused kernels."""
    return _active


def unavailable() -> str | None:
    """Why the fused kernels cannot run here (triton missing), or None."""
    if importlib.util.find_spec("triton") is None:
        return "the fused kernels need triton, which is not installed (it comes with torch's CUDA wheels on Linux)"
    return None


@contextlib.contextmanager
def fused_kernels() -> Iterator[None]:
    """Run the engine's SwooshL, SwooshR, BiasNorm and attention probabilities through the fused kernels while inside
    (nestable)."""
    global _active
    reason = unavailable()
    if reason:
        raise ZvperfError(f"{reason}.")
    importlib.import_module("zvperf.engine.fused_kernels")  # registers the zvperf:: custom ops
    before, _active = _active, True
    try:
        yield
    finally:
        _active = before


def swoosh_l(x: Tensor) -> Tensor:
    return torch.ops.zvperf.swoosh_l(x)


def swoosh_r(x: Tensor) -> Tensor:
    return torch.ops.zvperf.swoosh_r(x)


def bias_norm(x: Tensor, bias: Tensor, log_scale: Tensor) -> Tensor:
    return torch.ops.zvperf.bias_norm(x, bias, log_scale)


def relative_softmax(scores: Tensor, relative: Tensor, key_padding_mask: Tensor | None, masked_score: float) -> Tensor:
    """Attention probabilities from the content scores and the scores against every relative offset
    (``AttentionWeights.forward`` says how the second are laid out), in the scores' dtype."""
    return torch.ops.zvperf.relative_softmax(scores, relative, key_padding_mask, masked_score)
