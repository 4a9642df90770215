"""Built configurations for the benchmarks: built once, outside any timed region, and released when done."""

from __future__ import annotations

import copy
import dataclasses
import gc

import torch

from zvperf.backends import CheckoutBackend, check_runnable, get_backend, own_allocator
from zvperf.backends.official import OfficialRun
from zvperf.engine.device import on_engine_stream, synchronize
from zvperf.engine.models import ZipVoice, speech_condition_from_prompt
from zvperf.engine.pipeline import Synthesizer
from zvperf.engine.precision import TOLERANCES, relative_error
from zvperf.engine.solver import SolverInputs
from zvperf.engine.weights import load_weights
from zvperf.suite.matrix import Config
from zvperf.suite.options import BenchOptions

NOISE_SEED = 1234
SYNTHESIS_SEED = 666  # the official inference script's default --seed (and zvperf synth's)


class VerificationError(Exception):
    """A backend's output differs from the torch fp32 reference by more than its precision's tolerance."""


class Engine:
    """One configuration built on the device: weights loaded, backend prepared, prompt featurised.

    Unless it is the torch fp32 reference itself, every backend is checked against an fp32 torch copy
    of the model on the same inputs before anything of it is timed (once per input shape). On a GPU it is
    built, checked and run on the engine's own CUDA stream (``zvperf.engine.device.engine_stream``), the one
    whose handle ONNX Runtime and TensorRT are given.
    """

    def __init__(self, config: Config, options: BenchOptions) -> None:
        backend = get_backend(config.backend)
        check_runnable(backend, options.device, config.precision)
        self.config = config
        self.options = options
        self.own_allocator = own_allocator(backend)  # its memory is NVML's figure, not torch's
        self.weights = load_weights(config.model, options.weights)
        reference = copy.deepcopy(self.weights.model)  # before the synthesizer casts the model to the precision
        # A backend that runs the ZipVoice checkout loads the same weights through the checkout's own code, and its
        # rows time the checkout's functions (zvperf.backends.official).
        self.official: OfficialRun | None = None
        with on_engine_stream(options.device):
            self.synthesizer = Synthesizer(self.weights, options.device, config.precision)
            if isinstance(backend, CheckoutBackend):
                self.official = backend.load(config.model, options.weights, options.device, config.precision)
            else:
                self.synthesizer.solver = backend.prepare(self.synthesizer.model, options.device, config.precision)
            # The reference is the model's own fp32 eager solve; anything else (torch's oneDNN path included) is
            # checked against it.
            ours = self.synthesizer.solver
            is_reference = self.official is None and config.precision == "fp32" and ours == self.synthesizer.model.solve
            self.reference = None if is_reference else reference.to(options.device).float()
            self.prompt = self.synthesizer.prepare_prompt(options.prompt_wav, options.prompt_text)
        self._inputs: dict[tuple[int | None, int], SolverInputs] = {}
        self._verified: dict[tuple[int | None, int], float] = {}
        self._waveforms: dict[int, torch.Tensor] = {}

    @property
    def model(self) -> ZipVoice:
        return self.synthesizer.model

    def solver_inputs(self, frames: int | None, batch: int = 1) -> SolverInputs:
        """Inputs for the text's first chunk at its own length, or stretched to ``frames`` decoder frames
        (the prompt then takes at most a quarter of them); ``batch`` copies of that utterance."""
        key = (frames, batch)
        if key not in self._inputs:
            with on_engine_stream(self.options.device):
                self._inputs[key] = self._build_inputs(frames, batch)
        return self._inputs[key]

    def _build_inputs(self, frames: int | None, batch: int) -> SolverInputs:
        synth, prompt = self.synthesizer, self.prompt
        vocab = synth.tokenizer.vocabulary
        chunks, _ = synth.chunk_text(self.options.text, prompt, 1.0)
        text_ids, prompt_ids = vocab.ids(chunks[0]), vocab.ids(prompt.tokens)
        model = self.model
        with torch.inference_mode():
            if frames is None:
                prompt_frames = prompt.frames
                cond = model.text_condition([text_ids] * batch, [prompt_ids] * batch, [prompt_frames] * batch, 1.0)
            else:
                prompt_frames = min(prompt.frames, frames // 4)
                cond = model.layout_text([text_ids] * batch, [prompt_ids] * batch, [frames] * batch)
            speech = speech_condition_from_prompt(
                prompt.features[:, :prompt_frames].expand(batch, -1, -1), [prompt_frames] * batch, cond.frames.shape[1]
            )
            generator = torch.Generator(self.options.device).manual_seed(NOISE_SEED)
            x0 = torch.randn(cond.frames.shape, generator=generator, device=self.options.device).to(synth.dtype)
        return SolverInputs(x0, cond.frames, speech, cond.mask, text_ids, prompt_ids, prompt_frames, frames is None)

    def solve(self, inputs: SolverInputs, num_step: int) -> torch.Tensor:
        scale = self.model.default_guidance_scale
        if self.official is not None:  # the checkout's own solve (what its solver row times)
            return self.official.solve_call(inputs, num_step, scale)()
        return self.synthesizer.solver(*inputs.solver_args(), num_step, scale, 0.5)

    def verify(self, frames: int | None, batch: int, num_step: int) -> float | None:
        """Compare this backend's solve with the fp32 torch reference on the same inputs (once per shape):
        the relative error, or None for the reference itself. Raises VerificationError above tolerance."""
        if self.reference is None:
            return None
        key = (frames, batch)
        if key not in self._verified:
            inputs = self.solver_inputs(frames, batch)
            scale = self.model.default_guidance_scale
            with torch.inference_mode(), on_engine_stream(self.options.device):
                if self.official is not None:  # x1 from its first frame on (a path may return the generated part)
                    ours, start = self.official.solved(inputs, num_step, scale, NOISE_SEED)
                else:
                    ours, start = self.solve(inputs, num_step), 0
                x0, text, speech = (t.float() for t in inputs.solver_args()[:3])
                reference = self.reference.solve(x0, text, speech, inputs.padding_mask, num_step, scale)[:, start:]
                synchronize(self.options.device)
            mask = inputs.padding_mask
            valid = None if mask is None else ~mask[:, start:, None].expand_as(reference)
            what = f"x1 ({num_step} steps, {inputs.frames} frames)"
            self._verified[key] = self.compare(what, ours, reference, TOLERANCES[self.config.precision]["x1"], valid)
        return self._verified[key]

    def compare(
        self,
        what: str,
        ours: torch.Tensor,
        reference: torch.Tensor,
        tolerance: float,
        valid: torch.Tensor | None = None,
    ) -> float:
        """The relative error of ``ours`` against zvperf's torch fp32 ``reference``; above ``tolerance`` a
        VerificationError naming the configuration, ``what`` was compared and by how much they differ."""
        if ours.shape != reference.shape:
            raise VerificationError(
                f"{self.config.id}: its {what} has shape {tuple(ours.shape)}, zvperf's torch fp32 "
                f"{tuple(reference.shape)}: not timed"
            )
        error = relative_error(ours, reference, valid)
        if not error <= tolerance:
            raise VerificationError(
                f"{self.config.id}: its {what} differs from zvperf's torch fp32 by {error:.2e} (relative), above the "
                f"{self.config.precision} tolerance {tolerance:.0e}: not timed"
            )
        return error

    def reference_waveform(self, num_step: int) -> torch.Tensor:
        """zvperf's torch fp32 synthesis of the run's sentence (seed SYNTHESIS_SEED, as the official script's), once
        per step count: what the official end-to-end and cold-start rows are verified against."""
        if num_step not in self._waveforms:
            assert self.reference is not None
            weights = dataclasses.replace(self.weights, model=self.reference)
            with torch.inference_mode(), on_engine_stream(self.options.device):
                result = Synthesizer(weights, self.options.device).synthesize(
                    self.options.text, self.prompt, num_step=num_step, seed=SYNTHESIS_SEED
                )
            self._waveforms[num_step] = result.waveform.cpu()
        return self._waveforms[num_step]


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
