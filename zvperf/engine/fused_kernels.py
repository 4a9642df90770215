"""SwooshL, SwooshR, BiasNorm and the attention's score set-up as one Triton kernel each, registered as torch custom
ops (``zvperf::swoosh_l``, ``zvperf::swoosh_r``, ``zvperf::bias_norm``, ``zvperf::relative_softmax``) with fake
implementations, so that CUDA graph capture, torch.compile and torch's dispatch (a custom op is one operator) take
them.

The eager functions in zvperf.engine.zipformer widen half-precision input to an fp32 tensor, run 4 to 9 kernels on
it and narrow the result: 6 kernels per Swoosh and 11 per BiasNorm in fp16, each reading and writing the whole
tensor. Here each kernel reads its input once in its own dtype, computes in fp32 registers and writes once in
the input's dtype, so the numerics are the eager functions' (the same fp32 formulas, rounded to the dtype once at
the end) without the fp32 round-trip tensors. The attention's probabilities are the largest tensors of a step
(batch x heads x frames x frames): eagerly, the relative-position scores are re-indexed into a copy, added to the
content scores, masked, widened to fp32, soft-maxed and narrowed, each a pass over them; the kernel reads both
score tensors once (the relative ones at their re-indexed positions) and writes the probabilities once.

Imported by zvperf.engine.fused when the kernels are first switched on: ``TRITON_INTERPRET=1`` must be in the
environment before that import for Triton's interpreter, which runs these kernels on CPU tensors (the tests).
"""

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from zvperf.errors import ZvperfError

_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"  # what triton.jit decides by, below
_ELEMENTS_PER_PROGRAM = 1024
# Rows per BiasNorm program: as many as make about this many elements (4 of the full size's 512 channels, 32 of the
# tiny model's 64). A narrow row alone would leave most of a program's threads idle; 1800 frames still make 450
# programs. Triton's interpreter, which runs each program in Python, is also 15 times quicker than with one row.
_NORM_ELEMENTS_PER_PROGRAM = 2048
_SOFTPLUS_THRESHOLD = tl.constexpr(20.0)  # torch's softplus: the identity above it, as F.softplus(beta=1, threshold=20)


@triton.jit
def _swoosh_kernel(x_ptr, y_ptr, n, SHIFT: tl.constexpr, OFFSET: tl.constexpr, BLOCK: tl.constexpr):
    """y = softplus(x - SHIFT) - 0.08 x - OFFSET over n elements in memory order."""
    index = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = index < n
    x = tl.load(x_ptr + index, mask=inside).to(tl.float32)  # fp32 from here on, as the eager x.float()
    z = x - SHIFT
    # log1p(exp(z)) written with log() alone (Triton's interpreter has no libdevice): w = 1 + u rounds away u's low
    # bits, and log(w) * u / (w - 1) puts them back (Goldberg), so that this matches torch's log1p to fp32 rounding
    # where log(1 + u) would be off by up to 6e-8 absolute. Where u is below fp32's resolution at 1, log1p(u) = u;
    # the maximum only keeps a 0/0 out of the branch not taken.
    u = tl.exp(tl.minimum(z, _SOFTPLUS_THRESHOLD))
    w = 1.0 + u
    rounded = w - 1.0
    log1p = tl.where(rounded == 0.0, u, tl.log(w) * (u / tl.maximum(rounded, 1e-30)))
    softplus = tl.where(z > _SOFTPLUS_THRESHOLD, z, log1p)
    y = softplus - 0.08 * x - OFFSET
    tl.store(y_ptr + index, y.to(y_ptr.dtype.element_ty), mask=inside)  # one rounding to the dtype, as .to(x.dtype)


@triton.jit
def _bias_norm_kernel(x_ptr, bias_ptr, log_scale_ptr, y_ptr, rows, channels, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    """ROWS contiguous rows: y = x * rsqrt(mean((x - bias)^2)) * exp(log_scale); BLOCK is channels rounded up to a
    power of 2."""
    row_index = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    row = row_index[:, None]
    column = tl.arange(0, BLOCK)[None, :]
    inside = (row < rows) & (column < channels)
    x = tl.load(x_ptr + row * channels + column, mask=inside, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + column, mask=column < channels, other=0.0).to(tl.float32)
    # The squares and their sum in fp32 whatever the dtype: in fp16 (x - bias)^2 overflows once |x - bias| passes
    # 256 (65536 > 65504), and bf16's 8-bit mantissa would lose the sum. Masked channels contribute 0 - 0.
    centred = x - bias
    # Rows past the last (not stored) get 1, so that no 0/0 is computed for them.
    mean_square = tl.where(row_index < rows, tl.sum(centred * centred, axis=1) / channels, 1.0)
    scale = tl.load(log_scale_ptr).to(tl.float32)
    # inv_rms * exp(log_scale) first, then times x: the eager function's order, so fp32 agrees to rounding.
    y = x * (tl.rsqrt(mean_square) * tl.exp(scale))[:, None]
    tl.store(y_ptr + row * channels + column, y.to(y_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _relative_softmax_kernel(
    scores_ptr, relative_ptr, mask_ptr, y_ptr, rows, heads, frames, masked_score,
    HAS_MASK: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """ROWS rows of the (batch, heads, frames, frames) probabilities: softmax over key j of content score (i, j) plus
    relative score (i, j - i), keys the mask pads set to ``masked_score``. ``relative`` is (batch, heads, frames,
    2 frames - 1): each query's scores against the offsets -(frames-1)..frames-1, offset j - i in column
    (frames - 1) + j - i (what AttentionWeights re-indexes with a padded copy and views)."""
    row_index = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    row = row_index[:, None]
    key = tl.arange(0, BLOCK)[None, :]
    inside = (row < rows) & (key < frames)
    plane = row // frames  # utterance * heads + head
    query = row % frames
    content = tl.load(scores_ptr + row * frames + key, mask=inside, other=0.0)
    relative = tl.load(relative_ptr + row * (2 * frames - 1) + (frames - 1) - query + key, mask=inside, other=0.0)
    # The eager sum is rounded to the scores' dtype: the same here, from an fp32 sum (Triton's interpreter does not
    # add bf16 values as numbers).
    dtype = y_ptr.dtype.element_ty
    score = (content.to(tl.float32) + relative.to(tl.float32)).to(dtype).to(tl.float32)
    if HAS_MASK:
        padded = tl.load(mask_ptr + (plane // heads) * frames + key, mask=inside, other=0) != 0
        score = tl.where(padded, masked_score, score)
    score = tl.where(inside, score, float("-inf"))  # columns past the last key take no share
    # Rows past the last (not stored) get a maximum of 0 and a sum of 1: no -inf - -inf or 0/0 is computed for them.
    real = row_index < rows
    exponent = tl.exp(score - tl.where(real, tl.max(score, axis=1), 0.0)[:, None])
    y = exponent / tl.where(real, tl.sum(exponent, axis=1), 1.0)[:, None]
    tl.store(y_ptr + row * frames + key, y.to(y_ptr.dtype.element_ty), mask=inside)


def _dense(x: Tensor) -> Tensor:
    """x itself when its elements fill their memory without gaps or overlaps (a transposed tensor does), else a
    contiguous copy: the elementwise kernel walks memory, not indices."""
    strides = x.stride()
    by_stride = sorted(range(x.dim()), key=lambda dim: strides[dim], reverse=True)
    return x if x.permute(by_stride).is_contiguous() else x.contiguous()


def _elementwise_output(x: Tensor) -> Tensor:
    """The output of an elementwise op: the strides of the dense input the kernel reads, so that the nth element in
    memory is the nth element of the output too (also the op's fake implementation)."""
    return torch.empty_like(_dense(x))


def _on_device(x: Tensor) -> None:
    if not (x.is_cuda or _INTERPRETED):
        raise ZvperfError(f"the fused kernels run on CUDA tensors (or under TRITON_INTERPRET=1), not on {x.device}.")


def _swoosh(x: Tensor, shift: float, offset: float) -> Tensor:
    _on_device(x)
    y = _elementwise_output(x)
    x = _dense(x)
    n = x.numel()
    _swoosh_kernel[(triton.cdiv(n, _ELEMENTS_PER_PROGRAM),)](
        x, y, n, SHIFT=shift, OFFSET=offset, BLOCK=_ELEMENTS_PER_PROGRAM
    )
    return y


def _swoosh_op(name: str, shift: float, offset: float) -> None:
    """Register ``zvperf::name``: softplus(x - shift) - 0.08 x - offset (the constants of zvperf.engine.zipformer's
    function of that name)."""

    def compute(x: Tensor) -> Tensor:
        return _swoosh(x, shift, offset)

    op = torch.library.custom_op(f"zvperf::{name}", compute, mutates_args=())
    op.register_fake(_elementwise_output)


_swoosh_op("swoosh_l", 4.0, 0.035)
_swoosh_op("swoosh_r", 1.0, 0.313261687)


@torch.library.custom_op("zvperf::bias_norm", mutates_args=())
def _bias_norm(x: Tensor, bias: Tensor, log_scale: Tensor) -> Tensor:
    _on_device(x)
    x = x.contiguous()
    y = torch.empty_like(x)
    channels = x.shape[-1]
    rows = x.numel() // channels
    block = triton.next_power_of_2(channels)
    per_program = max(1, _NORM_ELEMENTS_PER_PROGRAM // block)
    _bias_norm_kernel[(triton.cdiv(rows, per_program),)](
        x, bias, log_scale, y, rows, channels, ROWS=per_program, BLOCK=block
    )
    return y


@_bias_norm.register_fake
def _(x: Tensor, bias: Tensor, log_scale: Tensor) -> Tensor:
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("zvperf::relative_softmax", mutates_args=())
def _relative_softmax(scores: Tensor, relative: Tensor, key_padding_mask: Tensor | None, masked_score: float) -> Tensor:
    _on_device(scores)
    scores, relative = scores.contiguous(), relative.contiguous()
    batch, heads, frames, _ = scores.shape
    y = torch.empty_like(scores)
    rows = batch * heads * frames
    block = triton.next_power_of_2(frames)
    per_program = max(1, _NORM_ELEMENTS_PER_PROGRAM // block)
    mask = key_padding_mask.contiguous() if key_padding_mask is not None else scores  # not read without a mask
    _relative_softmax_kernel[(triton.cdiv(rows, per_program),)](
        scores, relative, mask, y, rows, heads, frames, masked_score,
        HAS_MASK=key_padding_mask is not None, ROWS=per_program, BLOCK=block,
    )  # fmt: skip
    return y


@_relative_softmax.register_fake
def _(scores: Tensor, relative: Tensor, key_padding_mask: Tensor | None, masked_score: float) -> Tensor:
    return torch.empty_like(scores, memory_format=torch.contiguous_format)
