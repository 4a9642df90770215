"""Built configurations for the benchmarks: built once, outside any timed region, and released when done."""

from __future__ import annotations

import dataclasses
import gc

import torch

from zvperf.backends import check_runnable, get_backend
from zvperf.bench.matrix import Config
from zvperf.bench.options import BenchOptions
from zvperf.engine import audio
from zvperf.engine.models import speech_condition_from_prompt
from zvperf.engine.pipeline import Synthesizer
from zvperf.engine.weights import load_weights

NOISE_SEED = 1234


@dataclasses.dataclass
class SolverInputs:
    """Everything the ODE solve takes, prepared: the solver benchmark times the loop alone."""

    x0: torch.Tensor
    text_condition: torch.Tensor
    speech_condition: torch.Tensor
    padding_mask: torch.Tensor
    text_ids: list[int]
    prompt_ids: list[int]
    prompt_frames: int

    @property
    def frames(self) -> int:
        return self.x0.shape[1]

    @property
    def generated_frames(self) -> int:
        return self.frames - self.prompt_frames

    @property
    def audio_seconds(self) -> float:
        return self.generated_frames / audio.FRAMES_PER_SECOND


class Engine:
    """One configuration built on the device: weights loaded, backend prepared, prompt featurised."""

    def __init__(self, config: Config, options: BenchOptions) -> None:
        backend = get_backend(config.backend)
        check_runnable(backend, options.device, config.precision)
        self.config = config
        self.options = options
        self.weights = load_weights(config.model, options.weights)
        self.synthesizer = Synthesizer(self.weights, options.device, config.precision)
        self.synthesizer.solver = backend.prepare(self.synthesizer.model, options.device, config.precision)
        self.prompt = self.synthesizer.prepare_prompt(options.prompt_wav, options.prompt_text)
        self._inputs: dict[int | None, SolverInputs] = {}

    @property
    def model(self):
        return self.synthesizer.model

    def solver_inputs(self, frames: int | None) -> SolverInputs:
        """Inputs for the text's first chunk at its own length, or stretched to ``frames`` decoder frames
        (the prompt then takes at most a quarter of them)."""
        if frames not in self._inputs:
            self._inputs[frames] = self._build_inputs(frames)
        return self._inputs[frames]

    def _build_inputs(self, frames: int | None) -> SolverInputs:
        synth, prompt = self.synthesizer, self.prompt
        vocab = synth.tokenizer.vocabulary
        chunks, _ = synth.chunk_text(self.options.text, prompt, 1.0)
        text_ids, prompt_ids = vocab.ids(chunks[0]), vocab.ids(prompt.tokens)
        model = self.model
        with torch.inference_mode():
            if frames is None:
                cond = model.text_condition([text_ids], [prompt_ids], [prompt.frames], 1.0)
                prompt_frames = prompt.frames
            else:
                prompt_frames = min(prompt.frames, frames // 4)
                cond = model.layout_text([text_ids], [prompt_ids], [frames])
            speech = speech_condition_from_prompt(
                prompt.features[:, :prompt_frames], [prompt_frames], cond.frames.shape[1]
            )
            generator = torch.Generator(self.options.device).manual_seed(NOISE_SEED)
            x0 = torch.randn(cond.frames.shape, generator=generator, device=self.options.device).to(synth.dtype)
        return SolverInputs(x0, cond.frames, speech, cond.padding_mask, text_ids, prompt_ids, prompt_frames)

    def solve(self, inputs: SolverInputs, num_step: int) -> torch.Tensor:
        model = self.model
        return self.synthesizer.solver(
            inputs.x0,
            inputs.text_condition,
            inputs.speech_condition,
            inputs.padding_mask,
            num_step,
            model.default_guidance_scale,
            0.5,
        )


class EngineCache:
    """Holds the most recently used engine only: benchmarks are ordered by configuration, so each is built once."""

    def __init__(self, options: BenchOptions) -> None:
        self.options = options
        self._engine: Engine | None = None

    def get(self, config: Config) -> Engine:
        if self._engine is None or self._engine.config != config:
            self.release()
            self._engine = Engine(config, self.options)
        return self._engine

    def release(self) -> None:
        self._engine = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
