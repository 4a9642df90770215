"""Shared fixtures (helpers that tests import are in tests/helpers.py)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import CONFORMANCE, tiny_weights, write_official_dir
from zvperf.backends.checkout import ENV

# pytester's in-process runs drop the modules first imported inside them, and onnx's native extension cannot be
# imported a second time in one process: import the optional ONNX packages before any such run does.
for _name in ("onnx", "onnxruntime"):
    if importlib.util.find_spec(_name) is not None:
        importlib.import_module(_name)


@pytest.fixture
def one_thread(monkeypatch):
    """torch on one thread, here and in the processes a test starts: with two threads on two busy cores every
    OpenMP barrier waits for a descheduled thread, and rounds have spread 5x (72-398 ms) and more."""
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def case_copy(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A writable copy of a conformance case folder (the parametrized one, or tiny_zipvoice_distill)."""
    name = getattr(request, "param", "tiny_zipvoice_distill")
    target = tmp_path / name
    shutil.copytree(CONFORMANCE / name, target)
    for path in target.iterdir():
        path.chmod(0o644)
    return target


# The official code at a pinned commit (../shared/zipvoice-2f7326f/SNAPSHOT.md), for the tests that run a ZipVoice
# checkout for real; ZVPERF_ZIPVOICE names another (a fresh clone).
SNAPSHOT = Path(__file__).parents[2] / "shared" / "zipvoice-2f7326f"
OFFICIAL_IMPORTS = ("lhotse", "urllib3", "tensorboard")  # the zipvoice extra


def git(folder: Path, *args: str) -> str:
    command = ["git", "-C", str(folder), "-c", "user.name=zvperf", "-c", "user.email=zvperf@localhost", *args]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="session")
def zipvoice_source() -> Path:
    """The official code to copy: $ZVPERF_ZIPVOICE, else the pinned snapshot; a skip with the reason where there is
    none, or where the packages it imports are missing."""
    named = os.environ.get("ZVPERF_ZIPVOICE")
    source = Path(named) if named else SNAPSHOT
    if not (source / "zipvoice" / "models" / "zipvoice.py").is_file():
        pytest.skip(f"no ZipVoice code here: set ZVPERF_ZIPVOICE to a clone of k2-fsa/ZipVoice (or provide {SNAPSHOT})")
    missing = [name for name in OFFICIAL_IMPORTS if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"the official code imports {', '.join(missing)}: pip install -e '.[zipvoice]'")
    # Before any in-process pytester run imports them (and drops them after): protobuf's native part, under
    # tensorboard, cannot be imported twice in one process, as onnx's cannot.
    for name in ("lhotse", "torch.utils.tensorboard"):
        importlib.import_module(name)
    return source


@pytest.fixture(scope="session")
def zipvoice_checkout(zipvoice_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repository of the official code (a copy: tests commit to it, never to the source), its one commit
    the source as it is."""
    checkout = tmp_path_factory.mktemp("zipvoice-checkout")
    shutil.copytree(zipvoice_source / "zipvoice", checkout / "zipvoice", ignore=shutil.ignore_patterns("__pycache__"))
    git(checkout, "init", "-q")
    git(checkout, "add", "-A")
    git(checkout, "commit", "-q", "-m", "the official code")
    return checkout


BENCHMARKS = (Path(__file__).parent / "test_benchmarks.py").read_text()


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    root = tmp_path / "weights"
    write_official_dir(tiny_weights("zipvoice_distill"), root / "zipvoice_distill")
    return root


@pytest.fixture
def checkout_env(monkeypatch):
    """What running a checkout changes in this process (ZVPERF_ZIPVOICE, PYTHONPATH, sys.path, the imported
    zipvoice package) is as it was after the test, so that the next test may run another checkout."""
    for name in (ENV, "PYTHONPATH"):
        monkeypatch.setenv(name, os.environ.get(name, ""))  # recorded: restored (or removed) afterwards
    monkeypatch.delenv(ENV)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    for name in [m for m in sys.modules if m == "zipvoice" or m.startswith("zipvoice.")]:
        del sys.modules[name]


@pytest.fixture
def run_official(pytester: pytest.Pytester, tiny_dir: Path, checkout_env):
    """The tiny zipvoice_distill's rows at 2 steps, 1 round, with --zv-zipvoice CHECKOUT: (result, JSON or None)."""
    pytester.makepyfile(test_benchmarks=BENCHMARKS)

    def run(checkout: Path, *args: str) -> tuple[pytest.RunResult, dict | None]:
        out = pytester.path / "out.json"
        out.unlink(missing_ok=True)
        result = pytester.runpytest(
            "-p", "no:cacheprovider", "--benchmark-only", f"--benchmark-json={out}", "--zv-device=cpu",
            f"--zv-weights={tiny_dir}", "--zv-models=zipvoice_distill", "--zv-steps=2", "--zv-rounds=1",
            "--zv-warmup=0", f"--zv-zipvoice={checkout}", "-rsf", *args,
        )  # fmt: skip
        return result, json.loads(out.read_text()) if out.is_file() else None

    return run


@pytest.fixture
def checkout_copy(zipvoice_checkout: Path, tmp_path: Path) -> Path:
    """A clone of the test checkout that a test may commit to or change."""
    copy = tmp_path / "ZipVoice"
    git(tmp_path, "clone", "-q", str(zipvoice_checkout), str(copy))
    return copy
