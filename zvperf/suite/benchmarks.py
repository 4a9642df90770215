"""The benchmarks: what each one times, and the test functions pytest collects.

``tests/test_benchmarks.py`` imports the ``test_*`` functions, so ``pytest --benchmark-only`` from the
repository root collects them; ``pytest --pyargs zvperf.suite.benchmarks`` collects them from an
installed package (what ``zvperf bench`` and ``zvperf calibrate`` run).

Every benchmark: builds (or takes from the cache) its configuration outside timing, runs
pytest-benchmark's pedantic mode with warm-up rounds and a fixed round count, synchronises the
device inside each timed round, samples telemetry alongside, and records its facts.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import soundfile
import torch

from zvperf.backends import get_backend, keeps_build
from zvperf.backends.official import error_line
from zvperf.engine import audio
from zvperf.engine.device import on_engine_stream
from zvperf.engine.flops import solve_flops
from zvperf.engine.precision import TOLERANCES, dtype_of
from zvperf.results.schema import BenchmarkFacts
from zvperf.suite.engines import SYNTHESIS_SEED, Engine, VerificationError
from zvperf.suite.matrix import Combo, Config, Stopping
from zvperf.suite.session import BenchSession
from zvperf.suite.telemetry import Telemetry
from zvperf.suite.timing import HostReference, Stopped, measure


class Timed(NamedTuple):
    result: Any  # the last call's
    telemetry: Telemetry
    stopped: Stopped | None  # why the rounds ended, under a stopping rule
    reference: HostReference | None  # the host's speed beside each round, under a stopping rule on a CPU


def _run_timed(
    session: BenchSession,
    engine: Engine,
    benchmark: Any,
    fn: Callable[[], Any],
    rounds: int,
    warmup: int,
    stopping: Stopping | None = None,
) -> Timed:
    options = session.options
    gated_on_cpu = stopping is not None and options.device == "cpu"
    reference = HostReference(dtype_of(engine.config.precision)) if gated_on_cpu else None
    with (
        session.out_of_memory_skips("while timed"),
        on_engine_stream(options.device),
        torch.inference_mode(),
        Telemetry(options.device, torch_memory=not engine.own_allocator) as telemetry,
    ):
        result, stopped = measure(
            benchmark,
            fn,
            device=options.device,
            rounds=rounds,
            warmup_rounds=warmup,
            telemetry=telemetry,
            slowdown=options.slowdown,
            stopping=stopping,
            reference=reference,
        )
    return Timed(result, telemetry, stopped, reference)


def _run_rows(session: BenchSession, engine: Engine, benchmark: Any, fn: Callable[[], Any]) -> Timed:
    """A warm benchmark's rounds: the run's count, extended by its stopping rule where it has one."""
    options = session.options
    return _run_timed(session, engine, benchmark, fn, options.rounds, options.warmup_rounds, options.stopping)


def _record(
    session: BenchSession,
    benchmark: Any,
    timed: Timed,
    engine: Engine,
    kind: str,
    num_step: int | None,
    measured: tuple[float, int, int],
    **optional: Any,
) -> None:
    """The benchmark's facts from pytest-benchmark's own statistics and the telemetry, into extra_info;
    ``measured`` is (audio seconds, frames, decoder evaluations) of one call."""
    options = session.options
    config = engine.config
    audio_seconds, frames, nfe = measured
    if engine.official is not None:
        optional["zipvoice"] = engine.official.facts()
    if timed.stopped is not None:
        optional["stopping"] = timed.stopped.as_dict()
    if timed.reference is not None:
        optional["host_reference"] = timed.reference.as_dict()
    stats = benchmark.stats.stats
    median = stats.median
    facts = BenchmarkFacts(
        kind=kind,
        model=config.model,
        num_step=num_step,
        backend=config.backend,
        precision=config.precision,
        device=options.device,
        weights=engine.weights.kind,
        frames=frames,
        audio_seconds=audio_seconds,
        rtf=median / audio_seconds if audio_seconds else None,
        nfe=nfe,
        ms_per_nfe=median * 1e3 / nfe if nfe else None,
        telemetry=timed.telemetry.summary(len(stats.data), audio_seconds),
        injected_slowdown=options.slowdown or None,
        **optional,
    )
    benchmark.extra_info.update(facts.as_dict())
    session.benchmarks.append(benchmark)


def time_solver(benchmark: Any, session: BenchSession, combo: Combo) -> None:
    """The Euler ODE loop alone, on prepared conditions and noise (``combo.batch`` utterances at once)."""
    engine = session.verified_engine(combo)
    inputs = engine.solver_inputs(combo.frames, combo.batch)
    solve: Callable[[], Any] = partial(engine.solve, inputs, combo.num_step)
    if engine.official is not None:  # the checkout's own function itself, its arguments prepared here
        solve = engine.official.solve_call(inputs, combo.num_step, engine.model.default_guidance_scale)
    timed = _run_rows(session, engine, benchmark, solve)
    model = engine.model
    scale = model.default_guidance_scale
    measured = (inputs.audio_seconds, inputs.frames, model.nfe(combo.num_step, scale))
    guided = [bool(step.guidance) for step in model.plan(combo.num_step, scale, 0.5)]
    flops = solve_flops(model.config, inputs.frames, inputs.batch, guided, model.guidance_is_input)
    flop_rate = flops / benchmark.stats.stats.median
    attainable, peak = session.limits(model.config, engine.config.precision)
    optional = {
        "frames_bucket": combo.frames,
        "batch": combo.batch,
        "guidance_scale": scale,
        "verified_error": engine.verify(combo.frames, combo.batch, combo.num_step),
        "flops": float(flops),
        "flop_rate": flop_rate,
        "gemm_efficiency": flop_rate / attainable if attainable else None,
        "attainable_flop_rate": attainable,  # this process's measurement: processes differ by several percent
        "peak_efficiency": flop_rate / peak if peak else None,
    }
    _record(session, benchmark, timed, engine, "solver", combo.num_step, measured, **optional)


def time_e2e(benchmark: Any, session: BenchSession, combo: Combo) -> None:
    """Text + prompt wav + transcript to waveform, everything included (prompt loading, features, vocoder)."""
    engine = session.verified_engine(combo)
    if engine.official is not None:
        _time_official_e2e(benchmark, session, engine, combo)
        return
    options = session.options
    stages: list[dict[str, float]] = []

    def synthesize():
        result = engine.synthesizer.synthesize(options.text, options.prompt_wav, options.prompt_text, combo.num_step)
        stages.append(result.timings)
        return result

    timed = _run_rows(session, engine, benchmark, synthesize)
    result = timed.result
    rounds = stages[-len(benchmark.stats.stats.data) :]
    stages_ms = {name: statistics.median(t[name] for t in rounds) * 1e3 for name in rounds[0]}
    measured = (result.audio_seconds, result.frames, result.nfe)
    _record(
        session,
        benchmark,
        timed,
        engine,
        "e2e",
        combo.num_step,
        measured,
        stages_ms=stages_ms,
        chunks=result.chunks,
    )


def _verify_waveform(engine: Engine, what: str, wav: Path, num_step: int) -> float:
    """The official code's output file against zvperf's torch fp32 synthesis of the same sentence and seed."""
    data, _ = soundfile.read(str(wav), dtype="float32")  # mono: samples
    # The written file is 16-bit: about 3e-5 of quantisation on its own, well inside the x1 bound (1e-3 in fp32).
    tolerance = TOLERANCES[engine.config.precision]["x1"]
    return engine.compare(what, torch.from_numpy(data), engine.reference_waveform(num_step).flatten(), tolerance)


def _verify_script_output(engine: Engine, wav: Path, num_step: int) -> None:
    """The official script's file: as long as zvperf's synthesis of the sentence, and finite. Its samples cannot be
    compared: the script seeds before it builds the model, whose initialisation draws from the same generator, so
    its noise is not the seed's first draw."""
    data, _ = soundfile.read(str(wav), dtype="float32")
    expected = engine.reference_waveform(num_step).numel()
    if data.shape != (expected,) or not bool(torch.from_numpy(data).isfinite().all()):
        raise VerificationError(
            f"{engine.config.id}: its inference script wrote {data.size} samples ({'' if data.size else 'no '}audio), "
            f"zvperf's torch fp32 synthesis of the sentence has {expected}: not timed"
        )


def _time_official_e2e(benchmark: Any, session: BenchSession, engine: Engine, combo: Combo) -> None:
    """The checkout's ``generate_sentence``, its own timings (``t``: model inference, vocoder included;
    ``t_no_vocoder``, ``t_vocoder``; ``rtf``) kept beside pytest-benchmark's time of the whole call (which adds
    prompt loading, features, tokenizer, merging and writing the file), as the guide's columns."""
    official, options = engine.official, session.options
    assert official is not None
    scale = engine.model.default_guidance_scale
    with tempfile.TemporaryDirectory(prefix="zvperf-official-") as folder:
        wav = Path(folder) / "generated.wav"
        args = (wav, options.text, options.prompt_wav, options.prompt_text, combo.num_step, scale)
        with session.verification_fails(), torch.random.fork_rng(devices=_rng_devices(options.device)):
            torch.manual_seed(SYNTHESIS_SEED)  # as its script seeds before generating
            official.generate(*args)
            error = _verify_waveform(engine, "generated waveform", wav, combo.num_step)
        metrics: list[dict[str, float]] = []
        timed = _run_rows(session, engine, benchmark, lambda: metrics.append(official.generate(*args)))
    rounds = metrics[-len(benchmark.stats.stats.data) :]
    own = {name: statistics.median(m[name] for m in rounds) for name in OFFICIAL_METRICS}
    audio_seconds = own["wav_seconds"]
    inputs = engine.solver_inputs(None)
    nfe = engine.model.nfe(combo.num_step, scale)
    _record(
        session, benchmark, timed, engine, "e2e", combo.num_step, (audio_seconds, inputs.frames, nfe),
        verified_error=error, official_metrics=own,
    )  # fmt: skip


# What the official generate_sentence returns and its rows keep (median over the timed rounds).
OFFICIAL_METRICS = ("t", "t_no_vocoder", "t_vocoder", "wav_seconds", "rtf")


def _rng_devices(device: str) -> list[int]:
    return [torch.cuda.current_device()] if device == "cuda" else []


def _time_stage(
    benchmark: Any,
    session: BenchSession,
    engine: Engine,
    kind: str,
    call: Callable[[], Any],
    frames: int,
    verified_error: float | None = None,
) -> None:
    """Time one stage of synthesis that does not depend on the step count (once per configuration)."""
    inputs = engine.solver_inputs(None)
    timed = _run_rows(session, engine, benchmark, call)
    optional = {} if verified_error is None else {"verified_error": verified_error}
    _record(session, benchmark, timed, engine, kind, None, (inputs.audio_seconds, frames, 0), **optional)


def time_text_encoder(benchmark: Any, session: BenchSession, config: Config) -> None:
    """Prompt + text tokens through the text encoder and laid out on frames (the ratio duration rule)."""
    engine = session.engine(config)
    _skip_where_not_its_own(engine, "text_encoder")
    inputs = engine.solver_inputs(None)
    ours = partial(engine.model.text_condition, [inputs.text_ids], [inputs.prompt_ids], [inputs.prompt_frames], 1.0)
    official = engine.official
    if official is None:
        _time_stage(benchmark, session, engine, "text_encoder", ours, inputs.frames)
        return
    encode = official.text_encoder_call(inputs)
    # An int8 text encoder (the official ONNX export quantises it too) has a bound of its own.
    key = "quantised_text_condition" if official.quantised_text_encoder else "text_condition"
    tolerance = TOLERANCES[config.precision][key]
    with torch.inference_mode(), session.verification_fails():
        condition, valid = official.text_condition(encode())
        error = engine.compare("text condition", condition, ours().frames, tolerance, valid)
    _time_stage(benchmark, session, engine, "text_encoder", encode, inputs.frames, error)


def _skip_where_not_its_own(engine: Engine, kind: str) -> None:
    """A checkout path whose function for ``kind`` is the one the ``official`` row times skips, saying so."""
    if engine.official is not None and kind in engine.official.not_its_own:
        pytest.skip(engine.official.not_its_own[kind])


def time_vocoder(benchmark: Any, session: BenchSession, config: Config) -> None:
    """Generated features through Vocos to a trimmed waveform (the pipeline's vocoder stage); for the checkout, its
    vocoder's ``decode`` of the same features (its own trimming is part of its end-to-end row)."""
    engine = session.engine(config)
    _skip_where_not_its_own(engine, "vocoder")
    inputs = engine.solver_inputs(None)
    features = inputs.x0[0, inputs.prompt_frames :] * audio.FEAT_SCALE
    if engine.official is None:
        vocode = partial(engine.synthesizer.vocode, [features], engine.prompt, remove_long_silence=False)
        _time_stage(benchmark, session, engine, "vocoder", vocode, inputs.generated_frames)
        return
    channels_first = (features / audio.FEAT_SCALE).T[None].float()  # what its generate_sentence hands decode
    decode = partial(engine.official.vocoder.decode, channels_first)
    with torch.inference_mode(), session.verification_fails():
        error = engine.compare(
            "vocoder waveform", decode(), engine.synthesizer.vocoder.decode(channels_first), TOLERANCES["fp32"]["x1"]
        )
    _time_stage(benchmark, session, engine, "vocoder", decode, inputs.generated_frames, error)


def time_cold_start(benchmark: Any, session: BenchSession, config: Config) -> None:
    """A fresh process with empty caches: import, load the weights and build the backend (export, engine build,
    compilation), then the first synthesis; for the checkout, its inference script as users run it. A backend that
    keeps what it builds (zvperf.backends.keeps_build) is then started warm as many times, with what the last cold
    process kept: the second start on a machine, recorded beside the first as ``warm_*`` phases."""
    engine = session.engine(config)  # checks the configuration runs here, and gives the weights label
    options = session.options
    num_step = min(c.num_step for c in options.matrix.combos if c.config == config)
    phases: dict[bool, list[dict[str, float]]] = {False: [], True: []}  # warm? -> each process's phases
    with tempfile.TemporaryDirectory(prefix="zvperf-cold-") as folder:
        wav = Path(folder) / "generated.wav"
        kept = Path(folder) / "kept"  # zvperf's cache of the last cold process: what a warm start finds
        if engine.official is not None:
            threads = torch.get_num_threads()
            command = engine.official.cli_command(
                wav, options.text, options.prompt_wav, options.prompt_text, num_step, threads
            )
        else:
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
            command = [sys.executable, "-m", "zvperf.suite.coldstart", json.dumps(spec)]

        def start_process(warm: bool = False) -> None:
            # torch's and Triton's own caches are always empty: a cold process builds the ONNX export, TensorRT
            # engine and compiled kernels as on first use, and a warm one finds only what zvperf's cache kept.
            if not warm:
                shutil.rmtree(kept, ignore_errors=True)
            with tempfile.TemporaryDirectory(prefix="zvperf-cold-cache-") as empty:
                caches = {
                    "ZVPERF_CACHE": str(kept),
                    "TORCHINDUCTOR_CACHE_DIR": os.path.join(empty, "inductor"),
                    "TRITON_CACHE_DIR": os.path.join(empty, "triton"),
                    "PYTHONWARNINGS": "ignore",
                }
                completed = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **caches})
            if completed.returncode != 0:
                pytest.fail(
                    f"{config.id}: the {'warm' if warm else 'cold'}-start process failed (exit "
                    f"{completed.returncode}): {error_line(completed.stderr)}",
                    pytrace=False,
                )
            if engine.official is None:
                phases[warm].append(json.loads(completed.stdout.strip().splitlines()[-1]))

        if engine.official is not None:  # its script's output checked once before anything is timed
            with session.verification_fails():
                start_process()
                _verify_script_output(engine, wav, num_step)
        timed = _run_timed(session, engine, benchmark, start_process, options.cold_rounds, 0)
        if engine.official is None and keeps_build(get_backend(config.backend)):
            for _ in range(options.cold_rounds):
                start_process(warm=True)
    inputs = engine.solver_inputs(None)
    measured = (inputs.audio_seconds, inputs.frames, engine.model.nfe(num_step, engine.model.default_guidance_scale))
    phases_s = {
        f"{'warm_' if warm else ''}{name}": statistics.median(p[name] for p in processes)
        for warm, processes in phases.items()
        if processes
        for name in processes[0]
    }
    _record(session, benchmark, timed, engine, "cold_start", num_step, measured, phases_s=phases_s or None)


# The test functions (fixtures from zvperf.suite.plugin). Select with -k: distill, 4step, solver, trt, ...


def test_solver(benchmark: Any, zv_session: BenchSession, zv_run: Combo) -> None:
    time_solver(benchmark, zv_session, zv_run)


def test_e2e(benchmark: Any, zv_session: BenchSession, zv_utterance: Combo) -> None:
    time_e2e(benchmark, zv_session, zv_utterance)


def test_text_encoder(benchmark: Any, zv_session: BenchSession, zv_config: Config) -> None:
    time_text_encoder(benchmark, zv_session, zv_config)


def test_vocoder(benchmark: Any, zv_session: BenchSession, zv_config: Config) -> None:
    time_vocoder(benchmark, zv_session, zv_config)


def test_cold_start(benchmark: Any, zv_session: BenchSession, zv_config: Config) -> None:
    time_cold_start(benchmark, zv_session, zv_config)
