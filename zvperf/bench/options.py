"""The plugin's command-line options (one ``zvperf`` group) and their parsed, validated form."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from zvperf.backends import backend_names
from zvperf.bench.matrix import PRESETS, Matrix, expand
from zvperf.engine import audio
from zvperf.engine.precision import DTYPES
from zvperf.errors import ZvperfError


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("zvperf", "zvperf: ZipVoice inference benchmarks")
    add = group.addoption
    add("--zv-matrix", choices=list(PRESETS), help="preset rows: quick (CPU default), guide (CUDA default), full")
    add("--zv-models", help="comma list: zipvoice,zipvoice_distill (default: the matrix's)")
    add("--zv-steps", help="comma list of Euler step counts, replacing the matrix's")
    add("--zv-backends", help=f"comma list of backends ({', '.join(backend_names())})")
    add("--zv-precision", help=f"comma list of precisions ({', '.join(DTYPES)})")
    add("--zv-lengths", help="comma list of decoder frame counts (prompt + speech), e.g. 375,1000,1800,3000")
    add("--zv-batch", help="comma list of batch sizes for the solver benchmark, e.g. 1,4 (default: the matrix's)")
    add("--zv-device", default="auto", choices=["auto", "cpu", "cuda"], help="default: cuda when available")
    add("--zv-weights", default="auto", help="DIR, hub, synthetic, or auto (hub cache, else synthetic)")
    add("--zv-text", default=audio.DEMO_TEXT, help="the sentence to synthesise")
    add("--zv-prompt-wav", default=str(audio.DEMO_PROMPT_WAV), help="prompt audio (default: the bundled demo)")
    add("--zv-prompt-text", help="transcript of --zv-prompt-wav (required when it is given)")
    add("--zv-rounds", type=int, help="timed rounds per benchmark (default: the matrix's)")
    add("--zv-warmup", type=int, help="untimed warm-up rounds per benchmark (default: the matrix's)")
    add("--zv-shard", help="I/N: run only the I-th of N shards of the matrix (zvperf bench sets it per GPU)")
    add(
        "--zv-inject-slowdown",
        type=float,
        default=0.0,
        help="delay every timed call by this fraction of its own duration (0.25 = 25%% slower): "
        "a fake regression for testing the gate",
    )


def _csv(value: str | None, cast: Any = str) -> list[Any] | None:
    if not value:
        return None
    try:
        return [cast(v.strip()) for v in value.split(",") if v.strip()]
    except ValueError:
        raise ZvperfError(f"cannot read {value!r} as a comma-separated list of {cast.__name__}.") from None


@dataclasses.dataclass
class BenchOptions:
    matrix_name: str
    matrix: Matrix
    device: str
    device_problem: str | None  # why the requested device cannot run here (benchmarks skip with it)
    weights: str
    text: str
    prompt_wav: Path
    prompt_text: str
    rounds: int
    warmup_rounds: int
    cold_rounds: int
    slowdown: float
    shard: tuple[int, int]  # (index, count): this process times configurations index, index + count, ...

    @classmethod
    def from_config(cls, config: pytest.Config) -> BenchOptions:
        get = config.getoption
        requested = get("zv_device")
        cuda = torch.cuda.is_available()
        device = ("cuda" if cuda else "cpu") if requested == "auto" else requested
        problem = "no CUDA device is available" if device == "cuda" and not cuda else None
        name = get("zv_matrix") or ("guide" if device == "cuda" else "quick")
        backends = _csv(get("zv_backends"))
        unknown = [b for b in backends or [] if b not in backend_names()]
        if unknown:
            raise ZvperfError(f"--zv-backends: {unknown[0]!r} is not one of {', '.join(backend_names())}.")
        precisions = _csv(get("zv_precision"))
        bad = [p for p in precisions or [] if p not in DTYPES]
        if bad:
            raise ZvperfError(f"--zv-precision: {bad[0]!r} is not one of {', '.join(DTYPES)}.")
        matrix = expand(
            name,
            models=_csv(get("zv_models")),
            steps=_csv(get("zv_steps"), int),
            backends=backends,
            precisions=precisions,
            lengths=_csv(get("zv_lengths"), int),
            batches=_csv(get("zv_batch"), int),
        )
        prompt_wav = Path(get("zv_prompt_wav"))
        prompt_text = get("zv_prompt_text")
        if prompt_text is None:
            if prompt_wav != audio.DEMO_PROMPT_WAV:
                raise ZvperfError(f"--zv-prompt-text is required with --zv-prompt-wav {prompt_wav}.")
            prompt_text = audio.DEMO_PROMPT_TEXT
        rounds = get("zv_rounds") or matrix.rounds
        warmup = matrix.warmup_rounds if get("zv_warmup") is None else get("zv_warmup")
        if rounds < 1 or warmup < 0:
            raise ZvperfError(f"--zv-rounds must be at least 1 and --zv-warmup at least 0 (got {rounds}, {warmup}).")
        shard = _shard(get("zv_shard"))
        slowdown = get("zv_inject_slowdown")
        if not 0 <= slowdown <= 10:
            raise ZvperfError(f"--zv-inject-slowdown must be between 0 and 10, got {slowdown}.")
        return cls(
            matrix_name=name,
            matrix=matrix,
            device=device,
            device_problem=problem,
            weights=get("zv_weights"),
            text=get("zv_text"),
            prompt_wav=prompt_wav,
            prompt_text=prompt_text,
            rounds=rounds,
            warmup_rounds=warmup,
            cold_rounds=min(rounds, matrix.cold_rounds),
            slowdown=slowdown,
            shard=shard,
        )


def _shard(value: str | None) -> tuple[int, int]:
    if not value:
        return (0, 1)
    index, _, count = value.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise ZvperfError(f"--zv-shard {value!r}: expected I/N with 0 <= I < N, such as 0/2.")
    return int(index), int(count)
