"""End-to-end synthesis: text + prompt wav + prompt transcript -> 24 kHz waveform, with stage timings.

It follows the official ``infer_zipvoice`` single-sentence path: prompt silence trimmed with 0.2 s of
trailing silence added, quiet prompts raised to RMS 0.1, punctuation added where missing, long text
split at punctuation so that prompt plus chunk stay near 25 s, chunks batched by duration, Vocos per
utterance, loudness restored, chunks cross-faded and edge silence trimmed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from vocos import Vocos

from zvperf.engine import audio
from zvperf.engine.device import StageClock
from zvperf.engine.models import ZipVoice, speech_condition_from_prompt
from zvperf.engine.precision import dtype_of, use_ieee_fp32
from zvperf.engine.solver import Solver
from zvperf.engine.tokenizer import PUNCTUATION
from zvperf.engine.weights import Weights
from zvperf.errors import ZvperfError

STAGES = ("tokenize", "features", "text_encoder", "solver", "vocoder")
MAX_SECONDS_PER_CHUNK = 25.0  # prompt + chunk
CROSS_FADE_SECONDS = 0.1


@dataclasses.dataclass
class Prompt:
    """A prepared prompt: its features on the device and its tokens, reusable across syntheses."""

    features: torch.Tensor  # (1, frames, 100), scaled by FEAT_SCALE
    tokens: list[str]
    seconds: float
    original_rms: float
    warnings: list[str]

    @property
    def frames(self) -> int:
        return self.features.shape[1]


@dataclasses.dataclass
class SynthesisResult:
    waveform: torch.Tensor  # (samples,), float32 on the CPU
    timings: dict[str, float]  # seconds per stage, plus "total"
    frames: int  # decoder frames per evaluation (prompt + generated, the largest batch)
    generated_frames: int  # frames of speech produced, all chunks
    nfe: int  # decoder evaluations, a doubled (CFG) batch counting twice
    chunks: int
    weights: str  # "official", "local" or "synthetic" (zvperf.engine.weights)
    warnings: list[str]
    sample_rate: int = audio.SAMPLE_RATE

    @property
    def audio_seconds(self) -> float:
        return self.waveform.shape[-1] / self.sample_rate

    @property
    def rtf(self) -> float:
        """Seconds of compute per second of audio."""
        return self.timings["total"] / self.audio_seconds if self.audio_seconds else math.inf


def add_punctuation(text: str) -> str:
    text = text.strip()
    return text if text and text[-1] in PUNCTUATION else text + "."


def chunk_tokens(tokens: Sequence[str], max_tokens: int) -> list[list[str]]:
    """Sentences (split after punctuation; leading spaces and punctuation stick to the previous one), merged
    greedily into chunks of at most ``max_tokens`` (a longer sentence stays whole)."""
    sentences: list[list[str]] = []
    current: list[str] = []
    for token in tokens:
        if not current and sentences and (token in PUNCTUATION or token == " "):
            sentences[-1].append(token)
            continue
        current.append(token)
        if token in PUNCTUATION:
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    chunks: list[list[str]] = []
    for sentence in sentences:
        if chunks and len(chunks[-1]) + len(sentence) <= max_tokens:
            chunks[-1].extend(sentence)
        else:
            chunks.append(list(sentence))
    return chunks


def batch_by_duration(
    chunks: Sequence[Sequence[int]], max_seconds: float, prompt_seconds: float, token_seconds: float
) -> list[list[int]]:
    """Indices of chunks grouped, shortest first, so that each batch's estimated audio stays under ``max_seconds``."""
    batches: list[list[int]] = []
    tokens_in_batch = 0
    for index in sorted(range(len(chunks)), key=lambda i: len(chunks[i])):
        size = len(chunks[index])
        if batches and (tokens_in_batch + size) * token_seconds + len(batches[-1]) * prompt_seconds <= max_seconds:
            batches[-1].append(index)
            tokens_in_batch += size
        else:
            batches.append([index])
            tokens_in_batch = size
    return batches


def cross_fade(pieces: Sequence[torch.Tensor], overlap: int) -> torch.Tensor:
    """Concatenate 1-D waveforms, blending ``overlap`` samples linearly at each joint."""
    out = pieces[0]
    for piece in pieces[1:]:
        k = min(overlap, out.shape[-1], piece.shape[-1])
        if k <= 0:
            out = torch.cat([out, piece])
            continue
        fade = torch.linspace(1.0, 0.0, k)
        out = torch.cat([out[:-k], out[-k:] * fade + piece[:k] * (1 - fade), piece[k:]])
    return out


class Synthesizer:
    """Synthesis with one model and vocoder on one device and precision."""

    def __init__(self, weights: Weights, device: str = "cpu", precision: str = "fp32") -> None:
        """The model is moved to ``device`` in ``precision``; ``self.solver`` (default: the model's own eager
        solve) may be replaced by a backend's."""
        self.weights = weights
        self.device = device
        self.dtype = dtype_of(precision)
        use_ieee_fp32()
        self.model: ZipVoice = weights.model.to(device=device, dtype=self.dtype).eval()
        self.vocoder: Vocos = weights.vocoder.to(device).eval()
        self.solver: Solver = self.model.solve
        self.tokenizer = weights.tokenizer
        self.mel = audio.MelExtractor(device)

    # ----------------------------------------------------------------------------------------
    def prepare_prompt(self, wav: Path | str | tuple[torch.Tensor, int], text: str) -> Prompt:
        """Load, clean and featurise a prompt (``wav``: a path, or (channels x samples, rate))."""
        source = str(wav) if not isinstance(wav, tuple) else "the prompt waveform"
        waveform, rate = audio.read_wav(Path(wav)) if not isinstance(wav, tuple) else wav
        cleaned = audio.prepare_prompt(waveform, rate, source)
        tokens = self.tokenizer.tokens(add_punctuation(text)) if text.strip() else []
        if not self.tokenizer.vocabulary.ids(tokens):
            raise ZvperfError(f"the prompt transcript {text!r} has no token in the vocabulary.")
        features = self.mel(cleaned.waveform)[None].to(self.dtype) * audio.FEAT_SCALE
        return Prompt(features, tokens, cleaned.seconds, cleaned.original_rms, cleaned.warnings)

    def synthesize(
        self,
        text: str,
        prompt_wav: Path | str | tuple[torch.Tensor, int] | Prompt,
        prompt_text: str = "",
        num_step: int | None = None,
        guidance_scale: float | None = None,
        speed: float = 1.0,
        t_shift: float = 0.5,
        seed: int = 666,
        max_batch_seconds: float = 100.0,
        remove_long_silence: bool = False,
    ) -> SynthesisResult:
        """Speak ``text`` in the prompt's voice. ``prompt_wav`` may be a prepared :class:`Prompt`."""
        model = self.model
        num_step = model.default_num_step if num_step is None else num_step
        guidance_scale = model.default_guidance_scale if guidance_scale is None else guidance_scale
        if not text.strip():
            raise ZvperfError("the text to synthesise is empty.")
        clock = StageClock(self.device)
        with clock.stage("total"):
            with clock.stage("features"):
                prompt = prompt_wav if isinstance(prompt_wav, Prompt) else self.prepare_prompt(prompt_wav, prompt_text)
            with clock.stage("tokenize"):
                chunks, token_seconds = self.chunk_text(text, prompt, speed)
                vocab = self.tokenizer.vocabulary
                chunk_ids = [vocab.ids(c) for c in chunks]
                prompt_ids = vocab.ids(prompt.tokens)
                batches = batch_by_duration(chunk_ids, max_batch_seconds, prompt.seconds, token_seconds)
            generator = torch.Generator(self.device).manual_seed(seed)
            features: dict[int, torch.Tensor] = {}
            frames = 0
            for batch in batches:
                ids = [chunk_ids[i] for i in batch]
                with clock.stage("text_encoder"):
                    cond = model.text_condition(ids, [prompt_ids] * len(ids), [prompt.frames] * len(ids), speed)
                with clock.stage("solver"):
                    out = self.solve(cond, prompt, len(ids), num_step, guidance_scale, t_shift, generator)
                frames = max(frames, cond.frames.shape[1])
                for row, index in enumerate(batch):
                    features[index] = out[row, prompt.frames : cond.features_lens[row]]
            with clock.stage("vocoder"):
                waveform = self.vocode([features[i] for i in range(len(chunks))], prompt, remove_long_silence)
        generated = sum(f.shape[0] for f in features.values())
        result = SynthesisResult(
            waveform=waveform,
            timings={name: clock.seconds.get(name, 0.0) for name in (*STAGES, "total")},
            frames=frames,
            generated_frames=generated,
            nfe=model.nfe(num_step, guidance_scale, t_shift) * len(batches),
            chunks=len(chunks),
            weights=self.weights.kind,
            warnings=list(prompt.warnings),
        )
        return result

    def chunk_text(self, text: str, prompt: Prompt, speed: float) -> tuple[list[list[str]], float]:
        """The text's tokens in chunks that keep prompt + chunk near 25 s, and the seconds per token."""
        tokens = self.tokenizer.tokens(add_punctuation(text))
        if not self.tokenizer.vocabulary.ids(tokens):
            raise ZvperfError(f"the text {text!r} has no token in the vocabulary.")
        token_seconds = prompt.seconds / (len(prompt.tokens) * speed)
        max_tokens = int((MAX_SECONDS_PER_CHUNK - prompt.seconds) / token_seconds)
        chunks = [c for c in chunk_tokens(tokens, max_tokens) if self.tokenizer.vocabulary.ids(c)]
        return chunks, token_seconds

    def solve(
        self,
        cond,
        prompt: Prompt,
        batch: int,
        num_step: int,
        guidance_scale: float,
        t_shift: float,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """The ODE solve for one batch of chunks sharing a prompt: (batch, frames, 100) features."""
        frames = cond.frames.shape[1]
        speech = speech_condition_from_prompt(prompt.features.expand(batch, -1, -1), [prompt.frames] * batch, frames)
        x0 = torch.randn(cond.frames.shape, generator=generator, device=self.device, dtype=torch.float32)
        return self.solver(x0.to(self.dtype), cond.frames, speech, cond.mask, num_step, guidance_scale, t_shift)

    def vocode(self, features: Sequence[torch.Tensor], prompt: Prompt, remove_long_silence: bool) -> torch.Tensor:
        """Each chunk's features through Vocos (one at a time, as the reference), joined and trimmed."""
        gain = prompt.original_rms / audio.TARGET_RMS if prompt.original_rms < audio.TARGET_RMS else 1.0
        pieces = []
        for chunk in features:
            mel = (chunk.float() / audio.FEAT_SCALE).T[None]  # (1, 100, frames)
            wav = self.vocoder.decode(mel)[0].clamp(-1.0, 1.0) * gain
            pieces.append(wav.float().cpu())
            # Checked before trimming: the 16-bit silence detection would quietly turn NaN into numbers.
            if not torch.isfinite(pieces[-1]).all():
                raise ZvperfError("the synthesised audio contains NaN or infinite samples; nothing was written.")
        joined = cross_fade(pieces, int(CROSS_FADE_SECONDS * audio.SAMPLE_RATE))
        return audio.trim_silence(joined[None], edges_only=not remove_long_silence)[0]
