"""Test helpers: the bundled conformance cases, small models built from them, and weights folders in the official
layout. Fixtures are in conftest.py; tests import these."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from zvperf.engine.config import read_model_json
from zvperf.engine.tokenizer import EmiliaTokenizer
from zvperf.engine.vocoder import vocos_from_config
from zvperf.engine.weights import Weights, synthetic_model, write_model_dir

DATA = Path(__file__).parent / "data"
CONFORMANCE = DATA / "conformance"
CASE_DIRS = sorted(p for p in CONFORMANCE.iterdir() if p.is_dir())
# Bounds a hang only: what tests wait for (a file another process writes, a worker's exit) comes within a second on a
# quiet machine and within seconds on one loaded twice over.
WAIT_S = 120.0


# A Vocos small enough for fast tests, with the real mel-24khz front end and ISTFT head.
TINY_VOCOS_CONFIG = {
    "feature_extractor": {
        "class_path": "vocos.feature_extractors.MelSpectrogramFeatures",
        "init_args": {"sample_rate": 24000, "n_fft": 1024, "hop_length": 256, "n_mels": 100, "padding": "center"},
    },
    "backbone": {
        "class_path": "vocos.models.VocosBackbone",
        "init_args": {"input_channels": 100, "dim": 64, "intermediate_dim": 128, "num_layers": 1},
    },
    "head": {
        "class_path": "vocos.heads.ISTFTHead",
        "init_args": {"dim": 64, "n_fft": 1024, "hop_length": 256, "padding": "center"},
    },
}


def tiny_config():
    return read_model_json(CONFORMANCE / "tiny_zipvoice" / "model.json")[0]


def tiny_weights(model_name: str = "zipvoice_distill", seed: int = 0):
    """Weights with the conformance cases' tiny architecture, the built-in vocabulary and a tiny Vocos."""
    model, vocabulary = synthetic_model(model_name, seed, config=tiny_config())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vocoder = vocos_from_config(TINY_VOCOS_CONFIG, "tiny").eval()
    return Weights(model, EmiliaTokenizer(vocabulary), vocoder, "synthetic", "tiny test weights")


def write_official_dir(weights, directory, checkpoint="model.pt"):
    """A model directory in the official layout, from in-memory weights with the tiny Vocos."""
    return write_model_dir(weights, directory, TINY_VOCOS_CONFIG, checkpoint)


def run_tiny_benchmarks(pytester, weights_root: Path, *args: str):
    """The package's solver benchmarks of the tiny zipvoice_distill (official layout under ``weights_root``) at 2
    steps and 100 frames on the CPU, 2 rounds, in pytester's directory: (pytest's result, the JSON's path)."""
    write_official_dir(tiny_weights("zipvoice_distill"), weights_root / "zipvoice_distill")
    pytester.makepyfile(test_benchmarks=(Path(__file__).parent / "test_benchmarks.py").read_text())
    out = pytester.path / "out.json"
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--benchmark-only", f"--benchmark-json={out}", "--zv-device=cpu",
        f"--zv-weights={weights_root}", "--zv-models=zipvoice_distill", "--zv-steps=2", "--zv-lengths=100",
        "--zv-rounds=2", "-k", "solver", *args,
    )  # fmt: skip
    return result, out


def run_at_once(target: Callable[..., Any], arguments: Sequence[tuple[Any, ...]]) -> None:
    """``target(*args, barrier)`` in one fresh process per ``args``, released together at the barrier; asserts each
    process exits 0 (WAIT_S bounds a hang)."""
    context = multiprocessing.get_context("spawn")  # no fork of a process that holds torch's threads
    barrier = context.Barrier(len(arguments))
    workers = [context.Process(target=target, args=(*args, barrier)) for args in arguments]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=WAIT_S)
        assert worker.exitcode == 0


def wait_until(condition: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    """Poll ``condition`` until it returns something true, and return that; fails naming ``what`` after
    ``timeout_s``. For conditions no event announces (a file another process writes)."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:g} s"
        time.sleep(0.01)
    return value


def spawning_code(pid_file: Path, then: str = "p.wait()") -> str:
    """Python source for a child that starts a grandchild (which sleeps for ten minutes), writes the grandchild's
    id to ``pid_file`` (whole, through a rename) and then runs ``then`` (by default: waits for it)."""
    return (
        "import os, subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pid_file)!r} + '.tmp', 'w').write(str(p.pid))\n"
        f"os.replace({str(pid_file)!r} + '.tmp', {str(pid_file)!r})\n"
        f"{then}\n"
    )


def running(pid: int) -> bool:
    """Whether a process is alive (a killed one may stay a zombie until its new parent reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
