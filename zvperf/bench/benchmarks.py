"""What each benchmark times. The test functions in ``tests/test_benchmarks.py`` are one line each.

Every benchmark: builds (or takes from the cache) its configuration outside timing, runs
pytest-benchmark's pedantic mode with warm-up rounds and a fixed round count, synchronises the
device inside each timed round, samples telemetry alongside, and fills ``extra_info``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import torch

from zvperf.bench.engines import Engine, EngineCache, VerificationError
from zvperf.bench.matrix import Combo, Config
from zvperf.bench.options import BenchOptions
from zvperf.bench.telemetry import Telemetry
from zvperf.bench.timing import measure
from zvperf.engine import audio
from zvperf.errors import ZvperfError

MAX_ROUNDS_KEPT = 200


@dataclasses.dataclass
class BenchSession:
    """Per pytest session: options, the engine cache, and the benchmark fixtures run so far."""

    options: BenchOptions
    cache: EngineCache
    benchmarks: list[Any] = dataclasses.field(default_factory=list)

    def engine(self, config: Config) -> Engine:
        """The built engine, or a skip with the reason it cannot run here (never a failure)."""
        if self.options.device_problem:
            pytest.skip(self.options.device_problem)
        try:
            return self.cache.get(config)
        except ZvperfError as exc:
            pytest.skip(str(exc))
        except torch.cuda.OutOfMemoryError as exc:
            self.cache.release()
            pytest.skip(f"out of memory building {config.id}: {str(exc).splitlines()[0]}")

    def verified_engine(self, combo: Combo) -> Engine:
        """The engine, its output checked against torch fp32 at this shape: a mismatch fails the benchmark
        with the measured error (never timed); a shape the backend cannot take is a skip."""
        engine = self.engine(combo.config)
        try:
            engine.verify(combo.frames, combo.batch, combo.num_step)
        except VerificationError as exc:
            pytest.fail(str(exc), pytrace=False)
        except ZvperfError as exc:
            pytest.skip(str(exc))
        except torch.cuda.OutOfMemoryError as exc:
            self.cache.release()
            pytest.skip(f"out of memory running {combo.id}: {str(exc).splitlines()[0]}")
        return engine


def _run_timed(
    session: BenchSession, benchmark: Any, fn: Callable[[], Any], rounds: int, warmup: int
) -> tuple[Any, Telemetry]:
    options = session.options
    try:
        with Telemetry(options.device) as telemetry:
            result = measure(
                benchmark,
                fn,
                device=options.device,
                rounds=rounds,
                warmup_rounds=warmup,
                telemetry=telemetry,
                slowdown=options.slowdown,
            )
    except torch.cuda.OutOfMemoryError as exc:
        session.cache.release()
        pytest.skip(f"out of memory: {str(exc).splitlines()[0]}")
    return result, telemetry


def _finish(
    session: BenchSession,
    benchmark: Any,
    telemetry: Telemetry,
    *,
    kind: str,
    model: str,
    num_step: int | None,
    backend: str,
    precision: str,
    audio_seconds: float,
    frames: int,
    nfe: int,
    weights: str,
    frames_bucket: int | None = None,
    **more: Any,
) -> None:
    """Fill extra_info from pytest-benchmark's own statistics and the telemetry."""
    options = session.options
    stats = benchmark.stats.stats
    median = stats.median
    info = benchmark.extra_info
    info.update(
        kind=kind,
        model=model,
        num_step=num_step,
        backend=backend,
        precision=precision,
        device=options.device,
        weights=weights,
        frames=frames,
        frames_bucket=frames_bucket,
        audio_seconds=audio_seconds,
        rtf=median / audio_seconds if audio_seconds else None,
        nfe=nfe,
        ms_per_nfe=median * 1e3 / nfe if nfe else None,
        speedup_vs_zipvoice16=None,
        telemetry=telemetry.summary(len(stats.data), audio_seconds),
        flags=[],
        **more,
    )
    if options.slowdown:
        info["injected_slowdown"] = options.slowdown
    session.benchmarks.append(benchmark)


def time_solver(benchmark: Any, session: BenchSession, combo: Combo) -> None:
    """The Euler ODE loop alone, on prepared conditions and noise (``combo.batch`` utterances at once)."""
    engine = session.verified_engine(combo)
    inputs = engine.solver_inputs(combo.frames, combo.batch)

    def solve() -> torch.Tensor:
        with torch.inference_mode():
            return engine.solve(inputs, combo.num_step)

    options = session.options
    _, telemetry = _run_timed(session, benchmark, solve, options.rounds, options.warmup_rounds)
    model = engine.model
    _finish(
        session,
        benchmark,
        telemetry,
        kind="solver",
        model=combo.model,
        num_step=combo.num_step,
        backend=combo.backend,
        precision=combo.precision,
        audio_seconds=inputs.audio_seconds,
        frames=inputs.frames,
        frames_bucket=combo.frames,
        batch=combo.batch,
        nfe=model.nfe(combo.num_step, model.default_guidance_scale),
        weights=engine.weights.kind,
        guidance_scale=model.default_guidance_scale,
        verified_error=engine.verify(combo.frames, combo.batch, combo.num_step),
    )


def time_e2e(benchmark: Any, session: BenchSession, combo: Combo) -> None:
    """Text + prompt wav + transcript to waveform, everything included (prompt loading, features, vocoder)."""
    engine = session.verified_engine(combo)
    options = session.options
    stages: list[dict[str, float]] = []

    def synthesize():
        with torch.inference_mode():
            result = engine.synthesizer.synthesize(
                options.text, options.prompt_wav, options.prompt_text, num_step=combo.num_step
            )
        stages.append(result.timings)
        return result

    result, telemetry = _run_timed(session, benchmark, synthesize, options.rounds, options.warmup_rounds)
    timed = stages[-options.rounds :]
    _finish(
        session,
        benchmark,
        telemetry,
        kind="e2e",
        model=combo.model,
        num_step=combo.num_step,
        backend=combo.backend,
        precision=combo.precision,
        audio_seconds=result.audio_seconds,
        frames=result.frames,
        nfe=result.nfe,
        weights=engine.weights.kind,
        stages_ms={name: statistics.median(t[name] for t in timed) * 1e3 for name in timed[0]},
        chunks=result.chunks,
    )


def _time_component(
    benchmark: Any, session: BenchSession, config: Config, kind: str, call: Callable[[], Any], frames: int
) -> None:
    """Time one stage of synthesis that does not depend on the step count (once per configuration)."""
    engine = session.engine(config)
    inputs = engine.solver_inputs(None)

    def timed() -> Any:
        with torch.inference_mode():
            return call()

    options = session.options
    _, telemetry = _run_timed(session, benchmark, timed, options.rounds, options.warmup_rounds)
    _finish(
        session,
        benchmark,
        telemetry,
        kind=kind,
        model=config.model,
        num_step=None,
        backend=config.backend,
        precision=config.precision,
        audio_seconds=inputs.audio_seconds,
        frames=frames,
        nfe=0,
        weights=engine.weights.kind,
    )


def time_text_encoder(benchmark: Any, session: BenchSession, config: Config) -> None:
    """Prompt + text tokens through the text encoder and laid out on frames (the ratio duration rule)."""
    engine = session.engine(config)
    inputs = engine.solver_inputs(None)
    text, prompt = [inputs.text_ids], [inputs.prompt_ids]
    encode = partial(engine.model.text_condition, text, prompt, [inputs.prompt_frames], 1.0)
    _time_component(benchmark, session, config, "text_encoder", encode, inputs.frames)


def time_vocoder(benchmark: Any, session: BenchSession, config: Config) -> None:
    """Generated features through Vocos to a trimmed waveform (the pipeline's vocoder stage)."""
    engine = session.engine(config)
    inputs = engine.solver_inputs(None)
    features = inputs.x0[0, inputs.prompt_frames :] * audio.FEAT_SCALE
    vocode = partial(engine.synthesizer.vocode, [features], engine.prompt, remove_long_silence=False)
    _time_component(benchmark, session, config, "vocoder", vocode, inputs.generated_frames)


def time_cold_start(benchmark: Any, session: BenchSession, config: Config) -> None:
    """A fresh process with empty caches: import, load the weights and build the backend (export, engine build,
    compilation), then the first synthesis."""
    engine = session.engine(config)  # checks the configuration runs here, and gives the weights label
    options = session.options
    num_step = min(c.num_step for c in options.matrix.combos if c.config == config)
    spec = {
        "model": config.model,
        "backend": config.backend,
        "precision": config.precision,
        "device": options.device,
        "weights": options.weights,
        "num_step": num_step,
        "text": options.text,
        "prompt_wav": str(options.prompt_wav),
        "prompt_text": options.prompt_text,
    }
    phases: list[dict[str, float]] = []

    def start_process() -> None:
        # Empty caches too: the ONNX export, TensorRT engine and compiled kernels are built, as on first use.
        with tempfile.TemporaryDirectory(prefix="zvperf-cold-") as empty:
            caches = {"ZVPERF_CACHE": empty, "TORCHINDUCTOR_CACHE_DIR": empty, "PYTHONWARNINGS": "ignore"}
            completed = subprocess.run(
                [sys.executable, "-m", "zvperf.bench.coldstart", json.dumps(spec)],
                capture_output=True,
                text=True,
                env={**os.environ, **caches},
            )
        if completed.returncode != 0:
            tail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"the cold-start process failed: {tail}")
        phases.append(json.loads(completed.stdout.strip().splitlines()[-1]))

    _, telemetry = _run_timed(session, benchmark, start_process, options.cold_rounds, 0)
    audio_seconds = engine.solver_inputs(None).audio_seconds
    _finish(
        session,
        benchmark,
        telemetry,
        kind="cold_start",
        model=config.model,
        num_step=num_step,
        backend=config.backend,
        precision=config.precision,
        audio_seconds=audio_seconds,
        frames=engine.solver_inputs(None).frames,
        nfe=engine.model.nfe(num_step, engine.model.default_guidance_scale),
        weights=engine.weights.kind,
        phases_s={name: statistics.median(p[name] for p in phases) for name in phases[0]},
    )
