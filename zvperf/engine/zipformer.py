"""Inference-only Zipformer stacks, as used by ZipVoice's text encoder and flow-matching decoder.

Tensors are batch-first, (batch, frames, channels), throughout. Parameter names follow the
official checkpoints, so ``load_state_dict(strict=True)`` takes them unchanged; everything that
exists only for training (balancers, whitening, scheduled dropout, layer skipping, custom
autograd functions) has no counterpart here because it is the identity at inference.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zvperf.engine import fused

# The guidance scale's sinusoidal embedding has a fixed width in the official model, whatever time_embed_dim is.
GUIDANCE_EMBED_DIM = 192

# Large negative score for masked keys; exp() of it is exactly zero in fp32 and fp16, and
# unlike -inf it cannot turn a fully masked row into NaN.
_MASKED_SCORE = -1000.0

# Half precision (fp16, bf16) runs softplus, softmax and the normalisation statistics in fp32, as autocast
# does for the official model: the rest of the graph stays in the model's dtype. Each of these writes
# ``t.float()`` and ``.to(x.dtype)``, which are the tensor itself in fp32, so fp32 numerics do not change
# (the conformance cases check that); traced to ONNX in fp16 they become Casts around those ops.


def swoosh_l(x: Tensor) -> Tensor:
    """SwooshL(x) = log(1 + exp(x - 4)) - 0.08 x - 0.035."""
    if fused.active():
        return fused.swoosh_l(x)
    wide = x.float()
    return F.softplus(wide - 4.0).sub_(wide, alpha=0.08).sub_(0.035).to(x.dtype)


def swoosh_r(x: Tensor) -> Tensor:
    """SwooshR(x) = log(1 + exp(x - 1)) - 0.08 x - 0.313261687."""
    if fused.active():
        return fused.swoosh_r(x)
    wide = x.float()
    return F.softplus(wide - 1.0).sub_(wide, alpha=0.08).sub_(0.313261687).to(x.dtype)


class SwooshR(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return swoosh_r(x)


def sinusoidal_embedding(values: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Cosines then sines of ``values`` (shape (N,)) at geometric frequencies: (N, dim), fp32."""
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float32, device=values.device) / half
    freqs = torch.exp(-math.log(max_period) * exponent)
    angles = values.float()[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        embedding = F.pad(embedding, (0, 1))
    return embedding


def relative_position_table(length: int, dim: int, device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
    """Encodings of the relative offsets -(length-1) .. length-1: (2*length-1, dim), computed in fp32 and given in
    ``dtype`` (the layers' own, so that a half-precision step does not convert it in each layer).

    Offsets are squashed (log beyond sqrt(dim), then atan) before the Fourier features, so that
    near offsets are resolved finely and far ones coarsely; the last channel is a constant 1.
    Concrete lengths are cached, since the solver asks for the same few every step; symbolic ones
    (while a graph is exported or compiled) are computed in the graph.
    """
    if isinstance(length, int) and not torch.compiler.is_compiling():  # dynamo passes symbolic lengths as int
        return _cached_position_encoding(length, dim, device, dtype)
    return _position_encoding(length, dim, device).to(dtype)


@functools.lru_cache(maxsize=64)
def _cached_position_encoding(length: int, dim: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    # A normal (not inference-mode) tensor, since the cached table may later meet autograd-tracked code.
    with torch.inference_mode(False), torch.no_grad():
        return _position_encoding(length, dim, device).to(dtype)


def _position_encoding(length: int, dim: int, device: torch.device) -> Tensor:
    offsets = torch.arange(-(length - 1), length, device=device, dtype=torch.float32)[:, None]
    knee = dim**0.5
    squashed = knee * offsets.sign() * ((offsets.abs() + knee).log() - math.log(knee))
    angle = (squashed / (dim / (2.0 * math.pi))).atan()
    harmonics = angle * (1 + torch.arange(dim // 2, device=device))
    table = torch.stack([harmonics.cos(), harmonics.sin()], dim=-1).reshape(offsets.shape[0], dim)
    table[:, -1] = 1.0
    return table


class BiasNorm(nn.Module):
    """x / rms(x - bias) * exp(log_scale), over channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(1.0))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        if fused.active():
            return fused.bias_norm(x, self.bias, self.log_scale)
        # In fp32 whatever x's dtype: in fp16 the squares overflow once |x| passes 256.
        wide = x.float()
        inv_rms = (wide - self.bias.float()).pow(2).mean(dim=-1, keepdim=True).rsqrt()
        return (wide * (inv_rms * self.log_scale.float().exp())).to(x.dtype)


class Bypass(nn.Module):
    """A learned per-channel interpolation between a block's input and its output."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bypass_scale = nn.Parameter(torch.full((channels,), 0.5))

    def forward(self, before: Tensor, after: Tensor) -> Tensor:
        return before + (after - before) * self.bypass_scale


class ActivationLinear(nn.Module):
    """An activation followed by a linear map (parameters ``weight`` and ``bias`` as in the checkpoints)."""

    def __init__(self, in_features: int, out_features: int, activation) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        self.activation = activation
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        nn.init.uniform_(self.bias, -(in_features**-0.5), in_features**-0.5)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.activation(x), self.weight, self.bias)


class FeedForward(nn.Module):
    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.in_proj = nn.Linear(channels, hidden)
        self.out_proj = ActivationLinear(hidden, channels, swoosh_l)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_proj(self.in_proj(x))


class AttentionWeights(nn.Module):
    """Multi-head attention probabilities with a relative-position term; shape (B, heads, T, T).

    Scores are q.k + p.r(j - i) with no 1/sqrt(d) factor: the trained projections carry it.
    """

    def __init__(self, channels: int, pos_dim: int, heads: int, query_head_dim: int, pos_head_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.query_head_dim = query_head_dim
        self.pos_head_dim = pos_head_dim
        self.in_proj = nn.Linear(channels, heads * (2 * query_head_dim + pos_head_dim))
        self.linear_pos = nn.Linear(pos_dim, heads * pos_head_dim, bias=False)

    def forward(self, x: Tensor, pos_table: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        batch, frames, _ = x.shape
        heads, qd, pd = self.heads, self.query_head_dim, self.pos_head_dim
        q, k, p = self.in_proj(x).split([heads * qd, heads * qd, heads * pd], dim=-1)
        q = q.view(batch, frames, heads, qd).transpose(1, 2)
        k = k.view(batch, frames, heads, qd).permute(0, 2, 3, 1)
        p = p.view(batch, frames, heads, pd).transpose(1, 2)
        scores = torch.matmul(q, k)

        # Scores against every relative offset, then re-indexed so that query i, key j reads offset
        # j - i. With the offsets -(T-1)..T-1 in columns 0..2T-2 and one zero column appended, row i of
        # the flattened (T, 2T) scores holds the wanted T values at flat positions (T-1) + i(2T-1) + j:
        # a view, no copy, and only reshapes and slices, so ONNX export stays dynamic in T.
        rel = self.linear_pos(pos_table.to(x.dtype))
        if fused.active():  # the re-indexing, sum, mask and fp32 softmax in one kernel, without the padded copy
            rel_scores = torch.matmul(p, rel.view(2 * frames - 1, heads, pd).permute(1, 2, 0))
            return fused.relative_softmax(scores, rel_scores, key_padding_mask, _MASKED_SCORE)
        rel = F.pad(rel, (0, 0, 0, 1)).view(2 * frames, heads, pd).permute(1, 2, 0)
        rel_scores = torch.matmul(p, rel).reshape(batch, heads, 2 * frames * frames)
        rel_scores = rel_scores[..., frames - 1 : frames - 1 + frames * (2 * frames - 1)]
        rel_scores = rel_scores.reshape(batch, heads, frames, 2 * frames - 1)[..., :frames]
        scores = scores + rel_scores
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], _MASKED_SCORE)
        return scores.float().softmax(dim=-1).to(x.dtype)


class WeightedValues(nn.Module):
    """Attention output from precomputed weights: heads * value_head_dim values per frame."""

    def __init__(self, channels: int, heads: int, value_head_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj = nn.Linear(channels, heads * value_head_dim)
        self.out_proj = nn.Linear(heads * value_head_dim, channels)

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        batch, frames, _ = x.shape
        values = self.in_proj(x).view(batch, frames, self.heads, -1).transpose(1, 2)
        mixed = torch.matmul(weights, values).transpose(1, 2).reshape(batch, frames, -1)
        return self.out_proj(mixed)


class GatedAttention(nn.Module):
    """The 'non-linear attention': a tanh-gated projection mixed over time by head 0's weights, then gated again."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.in_proj = nn.Linear(channels, 3 * hidden)
        self.out_proj = nn.Linear(hidden, channels)

    def forward(self, x: Tensor, head0_weights: Tensor) -> Tensor:
        gate, values, out_gate = self.in_proj(x).chunk(3, dim=-1)
        mixed = torch.matmul(head0_weights, values * torch.tanh(gate))
        return self.out_proj(mixed * out_gate)


class Convolution(nn.Module):
    """GLU, depthwise convolution over time (padding frames zeroed first), SwooshR, projection."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.in_proj = nn.Linear(channels, 2 * channels)
        self.depthwise_conv = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
        self.out_proj = ActivationLinear(channels, channels, swoosh_r)

    def forward(self, x: Tensor, padding_mask: Tensor | None) -> Tensor:
        x = F.glu(self.in_proj(x), dim=-1)  # values * sigmoid(gate), the two halves of the projection
        if padding_mask is not None:
            x = x.masked_fill(padding_mask[..., None], 0.0)
        # Channels-first and contiguous: the layout the depthwise convolution kernels are fastest on.
        x = self.depthwise_conv(x.transpose(1, 2).contiguous()).transpose(1, 2)
        return self.out_proj(x)


class ZipformerLayer(nn.Module):
    def __init__(
        self,
        channels: int,
        pos_dim: int,
        heads: int,
        query_head_dim: int,
        pos_head_dim: int,
        value_head_dim: int,
        feedforward_dim: int,
        kernel_size: int,
    ) -> None:
        super().__init__()
        self.bypass = Bypass(channels)
        self.bypass_mid = Bypass(channels)
        self.self_attn_weights = AttentionWeights(channels, pos_dim, heads, query_head_dim, pos_head_dim)
        self.self_attn1 = WeightedValues(channels, heads, value_head_dim)
        self.self_attn2 = WeightedValues(channels, heads, value_head_dim)
        self.feed_forward1 = FeedForward(channels, feedforward_dim * 3 // 4)
        self.feed_forward2 = FeedForward(channels, feedforward_dim)
        self.feed_forward3 = FeedForward(channels, feedforward_dim * 5 // 4)
        self.nonlin_attention = GatedAttention(channels, 3 * channels // 4)
        self.conv_module1 = Convolution(channels, kernel_size)
        self.conv_module2 = Convolution(channels, kernel_size)
        self.norm = BiasNorm(channels)

    def forward(self, x: Tensor, pos_table: Tensor, time_emb: Tensor | None, padding_mask: Tensor | None) -> Tensor:
        start = x
        weights = self.self_attn_weights(x, pos_table, padding_mask)
        # time_emb is (B, 1, C) or zero-free None: it is added before the three blocks that mix time.
        if time_emb is not None:
            x = x + time_emb
        x = x + self.feed_forward1(x)
        x = x + self.nonlin_attention(x, weights[:, 0])
        x = x + self.self_attn1(x, weights)
        if time_emb is not None:
            x = x + time_emb
        x = x + self.conv_module1(x, padding_mask)
        x = x + self.feed_forward2(x)
        x = self.bypass_mid(start, x)
        x = x + self.self_attn2(x, weights)
        if time_emb is not None:
            x = x + time_emb
        x = x + self.conv_module2(x, padding_mask)
        x = x + self.feed_forward3(x)
        return self.bypass(start, self.norm(x))


class ZipformerStack(nn.Module):
    """Layers at one frame rate sharing one relative-position table and one time projection."""

    def __init__(self, layers: list[ZipformerLayer], channels: int, pos_dim: int, time_embed_dim: int | None) -> None:
        super().__init__()
        self.pos_dim = pos_dim
        self.time_emb = nn.Sequential(SwooshR(), nn.Linear(time_embed_dim, channels)) if time_embed_dim else None
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor, time_emb: Tensor | None, padding_mask: Tensor | None) -> Tensor:
        pos_table = relative_position_table(x.shape[1], self.pos_dim, x.device, x.dtype)
        stack_time = self.time_emb(time_emb)[:, None, :] if self.time_emb is not None else None
        for layer in self.layers:
            x = layer(x, pos_table, stack_time, padding_mask)
        return x


class Downsample(nn.Module):
    """Groups of ``factor`` frames averaged with learned softmax weights (the last frame repeats to fill)."""

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor
        self.bias = nn.Parameter(torch.zeros(factor))

    def forward(self, x: Tensor) -> Tensor:
        batch, frames, channels = x.shape
        groups = (frames + self.factor - 1) // self.factor
        # The last frame repeated by index: no branch on the length and no empty tensor, so an exported or
        # compiled graph serves every length (a compiled concatenation specialises on a fill of 0 or 1).
        last = torch.arange(groups * self.factor, device=x.device).clamp_(max=frames - 1)
        x = x.index_select(1, last)
        weights = self.bias.float().softmax(dim=0).to(x.dtype)
        return torch.einsum("bgfc,f->bgc", x.view(batch, groups, self.factor, channels), weights)


class DownsampledStack(nn.Module):
    """A stack run at 1/factor of the frame rate, repeated back up and blended with its input."""

    def __init__(self, stack: ZipformerStack, channels: int, factor: int) -> None:
        super().__init__()
        self.factor = factor
        self.downsample = Downsample(factor)
        self.encoder = stack
        self.out_combiner = Bypass(channels)

    def forward(self, x: Tensor, time_emb: Tensor | None, padding_mask: Tensor | None) -> Tensor:
        frames = x.shape[1]
        mask = padding_mask[:, :: self.factor] if padding_mask is not None else None
        y = self.encoder(self.downsample(x), time_emb, mask)
        y = y.repeat_interleave(self.factor, dim=1)[:, :frames]
        return self.out_combiner(x, y)


class Zipformer(nn.Module):
    """in_proj, U-shaped stacks at frame rates 1/factor, out_proj; optionally conditioned on time and guidance."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        factors: tuple[int, ...],
        num_layers: tuple[int, ...],
        kernel_sizes: tuple[int, ...],
        channels: int,
        feedforward_dim: int,
        heads: int,
        query_head_dim: int,
        pos_head_dim: int,
        value_head_dim: int,
        pos_dim: int,
        time_embed_dim: int | None = None,
        guidance_embed: bool = False,
    ) -> None:
        super().__init__()
        self.time_embed_dim = time_embed_dim
        self.in_proj = nn.Linear(in_dim, channels)
        self.out_proj = nn.Linear(channels, out_dim)
        stacks: list[nn.Module] = []
        for factor, count, kernel in zip(factors, num_layers, kernel_sizes, strict=True):
            layers = [
                ZipformerLayer(
                    channels, pos_dim, heads, query_head_dim, pos_head_dim, value_head_dim, feedforward_dim, kernel
                )
                for _ in range(count)
            ]
            stack = ZipformerStack(layers, channels, pos_dim, time_embed_dim)
            stacks.append(stack if factor == 1 else DownsampledStack(stack, channels, factor))
        self.encoders = nn.ModuleList(stacks)
        if time_embed_dim:
            self.time_embed = nn.Sequential(
                nn.Linear(time_embed_dim, 2 * time_embed_dim), SwooshR(), nn.Linear(2 * time_embed_dim, time_embed_dim)
            )
        if guidance_embed:
            assert time_embed_dim, "a guidance embedding needs a time embedding"
            self.guidance_scale_embed = nn.Linear(GUIDANCE_EMBED_DIM, time_embed_dim, bias=False)

    def condition(self, t: Tensor, guidance_scale: Tensor | None = None) -> Tensor:
        """The time (and guidance) conditioning vector for each batch entry: (B,) -> (B, time_embed_dim)."""
        assert self.time_embed_dim
        dtype = self.in_proj.weight.dtype
        emb = sinusoidal_embedding(t, self.time_embed_dim).to(dtype)
        if guidance_scale is not None:
            emb = emb + self.guidance_scale_embed(sinusoidal_embedding(guidance_scale, GUIDANCE_EMBED_DIM).to(dtype))
        return self.time_embed(emb)

    def forward(self, x: Tensor, padding_mask: Tensor | None, conditioning: Tensor | None = None) -> Tensor:
        x = self.in_proj(x)
        return self.run_stacks(x, padding_mask, conditioning)

    def run_stacks(self, x: Tensor, padding_mask: Tensor | None, conditioning: Tensor | None) -> Tensor:
        """Everything after in_proj; split out so callers can compute in_proj piecewise."""
        if conditioning is not None:
            conditioning = conditioning.to(x.dtype)
        for stack in self.encoders:
            x = stack(x, conditioning, padding_mask)
        return self.out_proj(x)
