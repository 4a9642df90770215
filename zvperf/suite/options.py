"""The plugin's command-line options (one ``zvperf`` group) and their parsed form.

Each value is checked while pytest parses the command line (argparse ``type=`` functions from
``zvperf.argtypes``), so a bad one is a usage error naming the option before anything is built; what
needs several options at once (the matrix, the prompt and its transcript) is checked in ``from_config``.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from pathlib import Path

import pytest
import torch

from zvperf.argtypes import bounded_float, bounded_int, comma_list, shard
from zvperf.backends import backend_names
from zvperf.backends.checkout import ENV, Checkout, activate, selected
from zvperf.engine import audio
from zvperf.engine.precision import DTYPES
from zvperf.errors import ZvperfError
from zvperf.gate.options import add_confirm_options, add_gate_options
from zvperf.suite.matrix import MIN_FRAMES, MODELS, PRESET_NAMES, Matrix, Stopping, expand

# The measurement options' defaults other than None (a confirmation passes on only what a run changed).
DEFAULTS = {
    "zv_device": "auto",
    "zv_weights": "auto",
    "zv_text": audio.DEMO_TEXT,
    "zv_prompt_wav": audio.DEMO_PROMPT_WAV,
}


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("zvperf", "zvperf: ZipVoice inference benchmarks")
    add = group.addoption
    add(
        "--zv-matrix",
        choices=list(PRESET_NAMES),
        help="preset rows: quick (CPU default), guide (CUDA default), full, gate (a pull request's rows: docs/gate.md)",
    )
    add("--zv-models", type=comma_list(str, lambda: MODELS), help=f"comma list: {','.join(MODELS)}")
    add("--zv-steps", type=comma_list(bounded_int(1)), help="comma list of Euler step counts, replacing the matrix's")
    add(
        "--zv-backends",
        type=comma_list(str, backend_names),
        help=f"comma list of backends ({', '.join(backend_names())})",
    )
    add(
        "--zv-precision",
        type=comma_list(str, lambda: list(DTYPES)),
        help=f"comma list of precisions ({', '.join(DTYPES)})",
    )
    add(
        "--zv-lengths",
        type=comma_list(bounded_int(MIN_FRAMES)),
        help="comma list of decoder frame counts (prompt + speech), e.g. 375,1000,1800,3000",
    )
    add(
        "--zv-batch",
        type=comma_list(bounded_int(1)),
        help="comma list of batch sizes for the solver benchmark, e.g. 1,4",
    )
    add(
        "--zv-device",
        default=DEFAULTS["zv_device"],
        choices=["auto", "cpu", "cuda"],
        help="default: cuda when available",
    )
    add("--zv-weights", default=DEFAULTS["zv_weights"], help="DIR, hub, synthetic, or auto (hub cache, else synthetic)")
    add(
        "--zv-zipvoice",
        type=Path,
        help="a ZipVoice checkout (a clone of k2-fsa/ZipVoice or a fork) whose own code the official rows run "
        f"(default: ${ENV}, else a zipvoice package on PYTHONPATH)",
    )
    add("--zv-text", default=DEFAULTS["zv_text"], help="the sentence to synthesise")
    add(
        "--zv-prompt-wav",
        type=Path,
        default=DEFAULTS["zv_prompt_wav"],
        help="prompt audio (default: the bundled demo)",
    )
    add("--zv-prompt-text", help="transcript of --zv-prompt-wav (required when it is given)")
    add(
        "--zv-rounds",
        type=bounded_int(1),
        help="timed rounds per benchmark, fixed (default: the matrix's, which the gate matrix's stopping rule extends)",
    )
    add("--zv-warmup", type=bounded_int(0), help="untimed warm-up rounds per benchmark (default: the matrix's)")
    add(
        "--zv-time-cap",
        type=bounded_float(0, 3600, open_low=True),
        metavar="SECONDS",
        help="under the matrix's stopping rule (the gate matrix), a row's timed rounds stop after this many seconds",
    )
    add("--zv-shard", type=shard, default=(0, 1), help="I/N: run only the I-th of N shards of the matrix")
    add(
        "--zv-inject-slowdown",
        type=bounded_float(0, 10),
        default=0.0,
        help="delay every timed call by this fraction of its own duration (0.25 = 25%% slower): "
        "a fake regression for testing the gate",
    )
    add(
        "--zv-gate", action="store_true", help="judge every result against its baseline; fail on a significant slowdown"
    )
    add(
        "--zv-update-baseline",
        action="store_true",
        help="merge this run's results into the baseline file for this hardware (previous values kept for revert)",
    )
    add(
        "--zv-confirm",
        action="store_true",
        help="with --zv-gate: re-run the failed and inconclusive configurations A/B, alternating processes of the "
        "base commit's checkout (--zv-base-checkout) and of this code, and judge head against base",
    )
    add_gate_options(add, prefix="zv-")
    add_confirm_options(add, prefix="zv-")


def _stopping(rule: Stopping | None, rounds: int | None, time_cap: float | None) -> Stopping | None:
    """The matrix's stopping rule, with --zv-time-cap's cap; none where --zv-rounds fixed the rounds."""
    if rule is None or rounds:
        return None
    return rule if time_cap is None else dataclasses.replace(rule, time_cap_s=time_cap)


# The options that decide what a benchmark process measures (their dests): a confirmation's processes get the
# values this run had. The injected slowdown is the head's alone (it stands for a change in the head's code).
MEASUREMENT_OPTIONS = (
    "zv_matrix", "zv_models", "zv_steps", "zv_backends", "zv_precision", "zv_lengths", "zv_batch", "zv_device",
    "zv_weights", "zv_text", "zv_prompt_wav", "zv_prompt_text", "zv_rounds", "zv_warmup", "zv_time_cap",
    "zv_zipvoice",
)  # fmt: skip


# The options whose value is a folder or file. pytest chooses its rootdir and configuration file before it loads
# plugins, so "--zv-zipvoice ../ZipVoice" there reads ../ZipVoice as a test path (pytest's documented caveat for
# plugin options that take paths); "--zv-zipvoice=../ZipVoice" does not.
PATH_OPTIONS = ("--zv-zipvoice", "--zv-weights", "--zv-prompt-wav")


def paths_read_as_tests(config: pytest.Config) -> list[str]:
    """Warnings, one sentence each, for the path options given with their value as a separate argument: what
    pytest made of it (its rootdir and configuration) and the form to write."""
    args = list(config.invocation_params.args)
    inifile = config.inipath or "none found"
    return [
        f"{option} {value}: pytest took {value} for a test path when it chose its rootdir ({config.rootpath}) and "
        f"configuration file ({inifile}) before zvperf's options were known; write {option}={value}"
        for option, value in itertools.pairwise(args)
        if option in PATH_OPTIONS and Path(value).exists()
    ]


def measurement_args(config: pytest.Config) -> list[str]:
    """The measurement options this run set, as command-line arguments, paths made absolute (the base commit's
    processes run from its checkout, and bundle their own default prompt)."""
    args = []
    for dest in MEASUREMENT_OPTIONS:
        value = config.getoption(dest)
        if value is None or value == DEFAULTS.get(dest):
            continue
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, Path) or (dest == "zv_weights" and Path(value).exists()):
            value = Path(value).resolve()
        args.append(f"--{dest.replace('_', '-')}={value}")
    return args


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
    stopping: Stopping | None  # the matrix's stopping rule, unless --zv-rounds fixed the rounds
    slowdown: float
    shard: tuple[int, int]  # (index, count): this process times configurations index, index + count, ...
    zipvoice: Checkout | None  # the ZipVoice checkout the official rows run, where there is one

    @classmethod
    def from_config(cls, config: pytest.Config) -> BenchOptions:
        get = config.getoption
        requested = get("zv_device")
        cuda = torch.cuda.is_available()
        device = ("cuda" if cuda else "cpu") if requested == "auto" else requested
        problem = "no CUDA device is available" if device == "cuda" and not cuda else None
        name = get("zv_matrix") or ("guide" if device == "cuda" else "quick")
        zipvoice = selected(get("zv_zipvoice"))
        named = bool(get("zv_zipvoice") or os.environ.get(ENV))
        if zipvoice is not None and named:
            activate(zipvoice)  # its package is what `import zipvoice` gives, here and in the processes started
        matrix = expand(
            name,
            models=get("zv_models"),
            steps=get("zv_steps"),
            backends=get("zv_backends"),
            precisions=get("zv_precision"),
            lengths=get("zv_lengths"),
            batches=get("zv_batch"),
            checkout_device=device if named else None,
            device=device,
        )
        prompt_wav = Path(get("zv_prompt_wav"))
        prompt_text = get("zv_prompt_text")
        if prompt_text is None:
            if prompt_wav != audio.DEMO_PROMPT_WAV:
                raise ZvperfError(f"--zv-prompt-text is required with --zv-prompt-wav {prompt_wav}.")
            prompt_text = audio.DEMO_PROMPT_TEXT
        rounds = get("zv_rounds") or matrix.rounds
        warmup = matrix.warmup_rounds if get("zv_warmup") is None else get("zv_warmup")
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
            stopping=_stopping(matrix.stopping, get("zv_rounds"), get("zv_time_cap")),
            slowdown=get("zv_inject_slowdown"),
            shard=get("zv_shard"),
            zipvoice=zipvoice,
        )
