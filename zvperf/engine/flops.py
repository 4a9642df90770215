"""How much arithmetic a solve is: the matrix-product FLOPs of the decoder, from the configuration alone.

Counted as ``torch.utils.flop_counter.FlopCounterMode`` counts them (a test checks the two agree on the real
model): two FLOPs per multiply-add of every matrix product (linear layers, attention products, the
downsampling weights) and of the depthwise convolutions; elementwise work (activations, softmax,
normalisation, bias adds) is not counted. The rate a solve achieves is these FLOPs over its time.
"""

from __future__ import annotations

import dataclasses

from zvperf.engine.config import ModelConfig

# The guidance scale's sinusoidal embedding width (zvperf.engine.zipformer.GUIDANCE_EMBED_DIM; not imported,
# so that this module stays free of torch).
_GUIDANCE_EMBED_DIM = 192


@dataclasses.dataclass(frozen=True)
class Linear:
    """One linear layer's product: ``rows`` x ``inputs`` times ``inputs`` x ``outputs``, ``count`` of them."""

    rows: int
    inputs: int
    outputs: int
    count: int = 1

    @property
    def flops(self) -> int:
        return 2 * self.rows * self.inputs * self.outputs * self.count


def stack_frames(config: ModelConfig, frames: int) -> list[int]:
    """The frame count each decoder stack runs at (its downsampling factor, rounded up)."""
    return [-(-frames // factor) for factor in config.fm_decoder_downsampling_factor]


def decoder_linears(config: ModelConfig, frames: int, rows: int) -> list[Linear]:
    """The per-frame linear layers of the decoder's stacks for ``rows`` sequences (a guided step's doubled batch
    counts twice), grouped by shape: the products a GEMM benchmark of the decoder's shapes times."""
    c = config
    channels, heads = c.fm_decoder_dim, c.fm_decoder_num_heads
    hidden = 3 * channels // 4
    feedforward = (
        c.fm_decoder_feedforward_dim * 3 // 4,
        c.fm_decoder_feedforward_dim,
        c.fm_decoder_feedforward_dim * 5 // 4,
    )
    counts: dict[tuple[int, int, int], int] = {}
    for length, layers in zip(stack_frames(config, frames), config.fm_decoder_num_layers, strict=True):
        m = rows * length
        per_layer = [
            Linear(m, channels, heads * (2 * c.query_head_dim + c.pos_head_dim)),  # attention in_proj
            Linear(m, channels, heads * c.value_head_dim, 2),  # two value projections
            Linear(m, heads * c.value_head_dim, channels, 2),  # and their output projections
            Linear(m, channels, 3 * hidden),  # gated attention in
            Linear(m, hidden, channels),  # gated attention out
            Linear(m, channels, 2 * channels, 2),  # convolution modules in (GLU)
            Linear(m, channels, channels, 2),  # convolution modules out
        ]
        for width in feedforward:
            per_layer += [Linear(m, channels, width), Linear(m, width, channels)]
        for linear in per_layer:
            shape = (linear.rows, linear.inputs, linear.outputs)
            counts[shape] = counts.get(shape, 0) + linear.count * layers
    return [Linear(*shape, count) for shape, count in counts.items()]


def decoder_step_flops(config: ModelConfig, frames: int, batch: int, guided: bool) -> int:
    """FLOPs of one decoder step (zvperf.engine.models.DecoderStep) for ``batch`` utterances of ``frames``
    frames: W_x x, the stacks on the batch (doubled when ``guided``), the output projection."""
    c = config
    rows = 2 * batch if guided else batch
    channels, heads = c.fm_decoder_dim, c.fm_decoder_num_heads
    flops = 2 * batch * frames * c.feat_dim * channels  # W_x x, before the guided batch is doubled
    flops += sum(linear.flops for linear in decoder_linears(config, frames, rows))
    for factor, length, layers, kernel in zip(
        c.fm_decoder_downsampling_factor,
        stack_frames(config, frames),
        c.fm_decoder_num_layers,
        c.fm_decoder_cnn_module_kernel,
        strict=True,
    ):
        per_layer = 2 * rows * heads * length * length * c.query_head_dim  # query . key
        per_layer += 2 * rows * heads * length * 2 * length * c.pos_head_dim  # query . every relative position
        per_layer += 2 * (2 * length - 1) * c.pos_dim * heads * c.pos_head_dim  # the position table's projection
        per_layer += 2 * 2 * rows * heads * length * length * c.value_head_dim  # two weightings of values
        per_layer += 2 * rows * length * length * (3 * channels // 4)  # the gated attention's weighting
        per_layer += 2 * 2 * rows * length * channels * kernel  # two depthwise convolutions
        flops += layers * per_layer
        flops += 2 * c.time_embed_dim * channels  # the stack's time projection (one conditioning row)
        if factor > 1:
            flops += 2 * rows * length * factor * channels  # the downsampling's weighted average
    return flops + 2 * rows * frames * channels * c.feat_dim  # output projection


def plan_flops(config: ModelConfig, frames: int, batch: int, num_step: int, guidance_embed: bool) -> int:
    """FLOPs of a solve's once-per-utterance work (zvperf.engine.models.SolvePlan): the text and speech parts
    of the input projection and every step's time (and guidance) embedding."""
    c = config
    flops = 2 * 2 * batch * frames * c.feat_dim * c.fm_decoder_dim
    per_step = 2 * 2 * c.time_embed_dim * 2 * c.time_embed_dim
    if guidance_embed:
        per_step += 2 * _GUIDANCE_EMBED_DIM * c.time_embed_dim
    return flops + num_step * per_step


def solve_flops(config: ModelConfig, frames: int, batch: int, guided_steps: list[bool], guidance_embed: bool) -> int:
    """FLOPs of a whole solve: its plan and one decoder step per entry of ``guided_steps``."""
    steps = sum(decoder_step_flops(config, frames, batch, guided) for guided in guided_steps)
    return steps + plan_flops(config, frames, batch, len(guided_steps), guidance_embed)
