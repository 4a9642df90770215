"""ZipVoice and ZipVoice-Distill for inference, checkpoint-compatible with the official models."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zvperf.engine.config import ModelConfig
from zvperf.engine.device import to_device
from zvperf.engine.solver import Step, nfe, plan_steps
from zvperf.engine.zipformer import Zipformer
from zvperf.errors import ZvperfError


class TextCondition:
    """The text encoder's output laid out on the frame axis, with the frame counts it was laid out for."""

    def __init__(self, frames: Tensor, padding_mask: Tensor, features_lens: list[int]) -> None:
        self.frames = frames  # (B, T, feat_dim)
        self.padding_mask = padding_mask  # (B, T), True on padding
        self.features_lens = features_lens  # prompt + generated frames, per utterance

    @property
    def mask(self) -> Tensor | None:
        """The padding mask, or None when no utterance is padded: known on the host, so the decoder can skip
        every masking kernel without asking the device."""
        return self.padding_mask if min(self.features_lens) < self.frames.shape[1] else None


def ratio_durations(
    prompt_frames: Sequence[int], prompt_token_counts: Sequence[int], token_counts: Sequence[int], speed: float
) -> list[int]:
    """Total frames per utterance: the prompt's plus its frames-per-token rate applied to the text.

    frames = prompt_frames + ceil(prompt_frames / prompt_tokens * tokens / speed), evaluated in
    float32 as the reference does, so that edge cases round to the same integer.
    """
    if speed <= 0 or not math.isfinite(speed):
        raise ZvperfError(f"speed must be a positive number, got {speed}.")
    if any(n <= 0 for n in prompt_token_counts):
        raise ZvperfError("the prompt transcript produced no tokens in the vocabulary.")
    pf = torch.tensor(list(prompt_frames), dtype=torch.int64)
    pt = torch.tensor(list(prompt_token_counts), dtype=torch.int64)
    tt = torch.tensor(list(token_counts), dtype=torch.int64)
    generated = torch.ceil(pf / pt * tt / speed).to(torch.int64)
    return (pf + generated).tolist()


def frame_token_index(features_lens: Sequence[int], token_counts: Sequence[int], num_frames: int) -> Tensor:
    """For every frame, the token position it reads: (B, num_frames) int64, computed without a loop per token.

    Each of an utterance's n tokens covers frames // n frames in order; the frames left over (the
    remainder and the batch padding) read position n, the pad appended after the last token.
    """
    lens = torch.tensor(list(features_lens), dtype=torch.int64)[:, None]
    counts = torch.tensor(list(token_counts), dtype=torch.int64)[:, None]
    per_token = lens // counts
    frame = torch.arange(num_frames, dtype=torch.int64)[None, :]
    covered = frame < per_token * counts
    return torch.where(covered, frame // per_token.clamp(min=1), counts)


class ZipVoice(nn.Module):
    """The ZipVoice model: a Zipformer text encoder and a Zipformer flow-matching decoder.

    Keyword arguments are the keys of the official ``model.json`` "model" section (any left out
    take the released base model's values) plus ``vocab_size`` and ``pad_id``.
    """

    default_num_step = 16
    default_guidance_scale = 1.0
    name = "zipvoice"
    # The distilled model takes the guidance scale as an input; this one applies it with a doubled batch.
    guidance_is_input = False

    def __init__(self, *, vocab_size: int = 360, pad_id: int = 0, **model_section: Any) -> None:
        super().__init__()
        defaults = ModelConfig().to_dict()
        unknown = sorted(set(model_section) - set(defaults))
        if unknown:
            raise ZvperfError(f"{type(self).__name__}: unknown architecture key {unknown[0]!r}.")
        config = ModelConfig.from_dict({**defaults, **model_section}, source=f"{type(self).__name__} arguments")
        if not 0 <= pad_id < vocab_size:
            raise ZvperfError(f"pad_id {pad_id} is outside the vocabulary of {vocab_size} tokens.")
        self.config = config
        self.vocab_size = vocab_size
        self.pad_id = pad_id
        self.feat_dim = config.feat_dim
        c = config
        self.fm_decoder = Zipformer(
            in_dim=3 * c.feat_dim,
            out_dim=c.feat_dim,
            factors=c.fm_decoder_downsampling_factor,
            num_layers=c.fm_decoder_num_layers,
            kernel_sizes=c.fm_decoder_cnn_module_kernel,
            channels=c.fm_decoder_dim,
            feedforward_dim=c.fm_decoder_feedforward_dim,
            heads=c.fm_decoder_num_heads,
            query_head_dim=c.query_head_dim,
            pos_head_dim=c.pos_head_dim,
            value_head_dim=c.value_head_dim,
            pos_dim=c.pos_dim,
            time_embed_dim=c.time_embed_dim,
            guidance_embed=self.guidance_is_input,
        )
        self.text_encoder = Zipformer(
            in_dim=c.text_embed_dim,
            out_dim=c.feat_dim,
            factors=(1,),
            num_layers=(c.text_encoder_num_layers,),
            kernel_sizes=(c.text_encoder_cnn_module_kernel,),
            channels=c.text_encoder_dim,
            feedforward_dim=c.text_encoder_feedforward_dim,
            heads=c.text_encoder_num_heads,
            query_head_dim=c.query_head_dim,
            pos_head_dim=c.pos_head_dim,
            value_head_dim=c.value_head_dim,
            pos_dim=c.pos_dim,
        )
        self.embed = nn.Embedding(vocab_size, c.text_embed_dim)

    @classmethod
    def from_config(cls, config: ModelConfig, vocab_size: int, pad_id: int) -> ZipVoice:
        return cls(vocab_size=vocab_size, pad_id=pad_id, **config.to_dict())

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.fm_decoder.in_proj.weight.dtype

    # ----------------------------------------------------------------------------------------
    # One velocity evaluation
    # ----------------------------------------------------------------------------------------
    def forward_fm_decoder(
        self,
        t: Tensor,
        xt: Tensor,
        text_condition: Tensor,
        speech_condition: Tensor,
        padding_mask: Tensor | None = None,
        guidance_scale: Tensor | None = None,
    ) -> Tensor:
        """The decoder's velocity at time ``t`` (a scalar or one value per batch entry, (N,) or (N, 1, 1)).

        ``padding_mask`` is True on padding frames. ``guidance_scale`` is used by the distilled model only.
        """
        batch = xt.shape[0]
        times = _per_batch(t, batch, xt.device)
        assert times is not None
        scale = _per_batch(guidance_scale, batch, xt.device) if self.guidance_is_input else None
        if self.guidance_is_input and scale is None:
            raise ZvperfError("zipvoice_distill needs a guidance_scale for every decoder evaluation.")
        x = torch.cat([xt, text_condition, speech_condition], dim=-1)
        mask = None if padding_mask is None else padding_mask.bool()
        return self.fm_decoder(x, mask, self.fm_decoder.condition(times, scale))

    # ----------------------------------------------------------------------------------------
    # Text conditioning
    # ----------------------------------------------------------------------------------------
    def encode_text(self, tokens: Sequence[Sequence[int]]) -> Tensor:
        """Text encoder output for each token sequence, with one pad token appended (masked out as a key)."""
        counts = [len(seq) for seq in tokens]
        width = max(counts) + 1
        padded = torch.full((len(tokens), width), self.pad_id, dtype=torch.int64)
        for row, seq in enumerate(tokens):
            padded[row, : len(seq)] = torch.tensor(list(seq), dtype=torch.int64)
        key_mask = torch.arange(width)[None, :] >= torch.tensor(counts)[:, None]
        padded, key_mask = to_device(padded, self.device), to_device(key_mask, self.device)
        return self.text_encoder(self.embed(padded), key_mask)

    def text_condition(
        self,
        tokens: Sequence[Sequence[int]],
        prompt_tokens: Sequence[Sequence[int]],
        prompt_features_lens: Sequence[int],
        speed: float = 1.0,
    ) -> TextCondition:
        """Prompt and text tokens encoded together and stretched over the frames the ratio rule gives them."""
        if len(tokens) != len(prompt_tokens) or len(tokens) != len(prompt_features_lens):
            raise ZvperfError("tokens, prompt_tokens and prompt_features_lens must have one entry per utterance.")
        features_lens = ratio_durations(
            [int(n) for n in prompt_features_lens], [len(p) for p in prompt_tokens], [len(t) for t in tokens], speed
        )
        return self.layout_text(tokens, prompt_tokens, features_lens)

    def layout_text(
        self, tokens: Sequence[Sequence[int]], prompt_tokens: Sequence[Sequence[int]], features_lens: Sequence[int]
    ) -> TextCondition:
        """Prompt and text tokens encoded together and stretched over ``features_lens`` frames each."""
        joined = [list(p) + list(t) for p, t in zip(prompt_tokens, tokens, strict=True)]
        counts = [len(seq) for seq in joined]
        num_frames = max(features_lens)
        encoded = self.encode_text(joined)
        index = to_device(frame_token_index(features_lens, counts, num_frames), self.device)
        frames = torch.gather(encoded, 1, index[..., None].expand(-1, -1, encoded.shape[-1]))
        padding_mask = to_device(torch.arange(num_frames)[None, :] >= torch.tensor(features_lens)[:, None], self.device)
        return TextCondition(frames, padding_mask, list(features_lens))

    # ----------------------------------------------------------------------------------------
    # The ODE solve
    # ----------------------------------------------------------------------------------------
    def plan(self, num_step: int, guidance_scale: float, t_shift: float) -> list[Step]:
        return plan_steps(num_step, t_shift, guidance_scale, doubled_batch_cfg=not self.guidance_is_input)

    def nfe(self, num_step: int, guidance_scale: float, t_shift: float = 0.5) -> int:
        return nfe(self.plan(num_step, guidance_scale, t_shift))

    def solve(
        self,
        x0: Tensor,
        text_condition: Tensor,
        speech_condition: Tensor,
        padding_mask: Tensor | None,
        num_step: int,
        guidance_scale: float,
        t_shift: float = 0.5,
    ) -> Tensor:
        """Integrate the flow from noise ``x0`` (t=0) to features (t=1) with ``num_step`` Euler steps.

        ``padding_mask`` is True on padding frames, or None when there are none."""
        plan = SolvePlan(self, text_condition, speech_condition, padding_mask, num_step, guidance_scale, t_shift)
        return plan.run(plan.step_module, x0)

    def sample(
        self,
        tokens: Sequence[Sequence[int]],
        prompt_tokens: Sequence[Sequence[int]],
        prompt_features: Tensor,
        prompt_features_lens: Sequence[int],
        speed: float = 1.0,
        t_shift: float = 0.5,
        num_step: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, list[int]]:
        """Generate features for ``tokens`` in the voice of the prompt.

        Returns the generated frames without the prompt, (B, max frames, feat_dim) zero-padded, and their counts.
        """
        num_step = self.default_num_step if num_step is None else num_step
        guidance_scale = self.default_guidance_scale if guidance_scale is None else guidance_scale
        cond = self.text_condition(tokens, prompt_tokens, prompt_features_lens, speed)
        speech = speech_condition_from_prompt(prompt_features, prompt_features_lens, cond.frames.shape[1])
        x0 = torch.randn(cond.frames.shape, device=self.device, generator=generator).to(cond.frames.dtype)
        x1 = self.solve(x0, cond.frames, speech, cond.mask, num_step, guidance_scale, t_shift)
        prompt_lens = [int(n) for n in prompt_features_lens]
        generated = [total - prompt for total, prompt in zip(cond.features_lens, prompt_lens, strict=True)]
        out = x1.new_zeros(x1.shape[0], max(generated), x1.shape[2])
        for row, (start, count) in enumerate(zip(prompt_lens, generated, strict=True)):
            out[row, :count] = x1[row, start : start + count]
        return out, generated


class ZipVoiceDistill(ZipVoice):
    """ZipVoice-Distill: the same architecture plus a guidance-scale embedding, one decoder pass per step."""

    default_num_step = 8
    default_guidance_scale = 3.0
    name = "zipvoice_distill"
    guidance_is_input = True


def speech_condition_from_prompt(prompt_features: Tensor, prompt_features_lens: Sequence[int], frames: int) -> Tensor:
    """The prompt's features on the first frames of each utterance, zeros elsewhere: (B, frames, feat_dim)."""
    lens = torch.tensor([int(n) for n in prompt_features_lens])
    keep = to_device(torch.arange(prompt_features.shape[1])[None, :] < lens[:, None], prompt_features.device)
    speech = prompt_features * keep[..., None]
    return F.pad(speech, (0, 0, 0, frames - speech.shape[1]))


def _per_batch(value: Tensor | float | None, batch: int, device: torch.device) -> Tensor | None:
    if value is None:
        return None
    values = torch.as_tensor(value, dtype=torch.float32, device=device).reshape(-1)
    return values.expand(batch) if values.numel() == 1 else values


class DecoderStep(nn.Module):
    """One Euler step as a single graph: x -> x + a * v_cond + b * v_uncond.

    The decoder sees W_x x + ``constant``, where ``constant`` holds the text and speech parts of its
    input projection (see :class:`SolvePlan`). With classifier-free guidance the batch is doubled as
    [unconditional; conditional] and a = dt (1 + g), b = -dt g, otherwise a = dt. This one module is
    what every backend runs: eagerly, compiled, captured in a CUDA graph, or exported to ONNX.
    """

    def __init__(self, decoder: Zipformer, feat_dim: int, guided: bool) -> None:
        super().__init__()
        self.decoder = decoder
        self.feat_dim = feat_dim
        self.guided = guided

    def forward(
        self, x: Tensor, constant: Tensor, padding_mask: Tensor | None, conditioning: Tensor, coefficients: Tensor
    ) -> Tensor:
        h = F.linear(x, self.decoder.in_proj.weight[:, : self.feat_dim])
        if self.guided:
            h = torch.cat([h, h])
        velocity = self.decoder.run_stacks(h + constant, padding_mask, conditioning)
        # In x's precision, written out rather than as addcmul, whose ONNX export would promote it to fp32.
        coefficients = coefficients.to(x.dtype)
        if not self.guided:
            return x + coefficients[0] * velocity
        uncond, cond = velocity.chunk(2)
        return x + coefficients[0] * cond + coefficients[1] * uncond


class SolvePlan:
    """What a solve computes once, before its steps: the parts of the decoder's input projection that
    come from the text and the speech prompt (for each branch of guidance), the time/guidance
    conditioning of every step, and every step's Euler coefficients.

    The input projection is linear, so in_proj(concat(x, text, speech)) = W_x x + (W_text text + W_speech
    speech + b); only the first term changes from step to step.
    """

    def __init__(
        self,
        model: ZipVoice,
        text_condition: Tensor,
        speech_condition: Tensor,
        padding_mask: Tensor | None,
        num_step: int,
        guidance_scale: float,
        t_shift: float,
    ) -> None:
        decoder = model.fm_decoder
        feat = model.feat_dim
        self.steps = model.plan(num_step, guidance_scale, t_shift)
        # Guidance is all or nothing: plan_steps gives every step the same kind of pass.
        self.guided = bool(self.steps[0].guidance)
        self.step_module = DecoderStep(decoder, feat, self.guided)
        _, w_text, w_speech = decoder.in_proj.weight.split(feat, dim=1)
        bias = decoder.in_proj.bias
        speech_part = F.linear(speech_condition, w_speech)
        conditional = F.linear(text_condition, w_text) + speech_part + bias
        mask = padding_mask.bool() if padding_mask is not None else None
        device = text_condition.device
        if self.guided:
            # Batch layout [unconditional; conditional], as in the reference. The unconditional branch
            # has no text, and keeps the speech prompt only before t = 0.5.
            keep_speech = torch.cat([speech_part + bias, conditional])
            drop_speech = torch.cat([bias.expand_as(conditional), conditional])
            self.constants = [keep_speech if s.uncond_keeps_speech else drop_speech for s in self.steps]
            self.mask = torch.cat([mask, mask]) if mask is not None else None
            coefficients = [[s.dt * (1.0 + s.guidance), -s.dt * s.guidance] for s in self.steps]
        else:
            self.constants = [conditional] * len(self.steps)
            self.mask = mask
            coefficients = [[s.dt, 0.0] for s in self.steps]
        self.coefficients = to_device(torch.tensor(coefficients, dtype=torch.float32), device)
        times = to_device(torch.tensor([s.t for s in self.steps], dtype=torch.float32), device)
        scales = torch.full_like(times, guidance_scale) if model.guidance_is_input else None
        self.conditioning = decoder.condition(times, scales)  # (num_step, time_embed_dim)

    def step_inputs(self, index: int) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
        """(constant, padding_mask, conditioning, coefficients) for step ``index``."""
        return self.constants[index], self.mask, self.conditioning[index : index + 1], self.coefficients[index]

    def run(self, step: Callable[..., Tensor], x: Tensor) -> Tensor:
        """Every step through ``step`` (a :class:`DecoderStep` or anything with its signature)."""
        for index in range(len(self.steps)):
            x = step(x, *self.step_inputs(index))
        return x
