"""The processes of a same-job confirmation: the base commit's code and the head's, alternately, on the
configurations in doubt (``zvperf.gate.confirm`` judges them).

The base commit runs without a second install: a checkout of it (the GPU workflow's ``.zvperf-base``) put
first on PYTHONPATH and used as the working directory, with the head's virtual environment. Python then
imports ``zvperf`` (and the pytest plugin the ``pytest11`` entry point names, ``zvperf.suite.plugin``) from
the checkout, while torch, TensorRT and every other package come from the one environment. This holds while
the base's dependency pins equal the head's; a change to the pins needs a base environment of its own (the
workflow keys its environments on the pins, so a second one is built once). The base gets a ZVPERF_CACHE
folder of its own (``confirm-base`` in the head's), so that neither runs the other's exported graphs or
engines; the head keeps the one its first run filled.

In CI it is the other way round (``zvperf confirm --head-python``): this process is the base commit's zvperf, in an
environment of its own, and judges; the head's processes run with the head's environment's interpreter and the
zvperf installed there, so that the change's code measures itself but never decides its verdict.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import zvperf
from zvperf import processes
from zvperf.backends.checkout import open_checkout
from zvperf.errors import ZvperfError
from zvperf.files import cache_dir
from zvperf.gate.confirm import MIN_PROCESSES, confirmed, pytest_name, to_confirm
from zvperf.gate.judge import GateReport
from zvperf.results.schema import ResultsFile, load_results
from zvperf.suite.launcher import pytest_command

# pytest exits 1 when a benchmark failed (the base may lack a backend the head has): its JSON still holds the
# rest; 5 when the selection matched nothing (a configuration the base's matrix does not have).
_USABLE_EXITS = (0, 1, 5)


@dataclasses.dataclass(frozen=True)
class Side:
    """How one commit's processes start."""

    name: str  # base or head
    python: str  # the interpreter
    code_root: Path | None  # put first on PYTHONPATH (None: the zvperf the interpreter's environment installed)
    cwd: Path | None  # the working directory (None: this one)
    cache: Path  # its ZVPERF_CACHE
    extra: tuple[str, ...] = ()  # pytest arguments of its own


def _environment(code_root: Path | None, cache: Path) -> dict[str, str]:
    path = [*filter(None, [str(code_root) if code_root else None, *os.environ.get("PYTHONPATH", "").split(os.pathsep)])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path), "ZVPERF_CACHE": str(cache)}


def _run(side: Side, out: Path, args: Sequence[str]) -> ResultsFile | None:
    command = pytest_command("-q", "-p", "no:cacheprovider", f"--benchmark-json={out}", *args, python=side.python)
    env = _environment(side.code_root, side.cache)
    log_path = out.with_suffix(".log")
    # A process group of its own: nothing the benchmark process started outlives it and times the next process.
    with (
        log_path.open("w") as log,
        processes.group(command, cwd=side.cwd, env=env, stdout=log, stderr=subprocess.STDOUT) as process,
    ):
        code = process.wait()
    if code not in _USABLE_EXITS:
        tail = log_path.read_text(errors="replace").strip().splitlines() or ["no output"]
        raise ZvperfError(f"the {side.name} commit's benchmark process failed (pytest exit {code}): {tail[-1]}")
    return load_results(out) if out.exists() else None


def zvperf_sides(
    base_checkout: Path, head_args: Sequence[str] = (), head_python: str | None = None
) -> tuple[Side, Side]:
    """Two zvperf commits: the base from its checkout, the head this code (or ``head_python``'s installed zvperf)."""
    base = base_checkout.resolve()
    if not (base / "zvperf" / "__init__.py").is_file():
        raise ZvperfError(f"--base-checkout {base_checkout}: no zvperf package there (a checkout of the base commit?).")
    head = Path(zvperf.__file__).resolve().parents[1]  # the code this process runs: the head's
    root = cache_dir()
    # The base runs from its checkout: the head's folder, first on sys.path as the working directory, would shadow it.
    return (
        Side("base", sys.executable, base, base, root / "confirm-base"),
        Side("head", head_python or sys.executable, None if head_python else head, None, root, tuple(head_args)),
    )


def zipvoice_sides(base: Path, head: Path, head_args: Sequence[str] = ()) -> tuple[Side, Side]:
    """Two ZipVoice checkouts under the same zvperf and environment: the processes differ in ``--zv-zipvoice``
    alone (last on their command lines, so it wins over one in the run's own options). Caches are shared: what is
    built from a checkout is keyed by its commit."""
    checkouts = [open_checkout(base), open_checkout(head)]  # each a ZipVoice checkout, or one sentence saying not
    root = cache_dir()
    return (
        Side("base", sys.executable, None, None, root, (f"--zv-zipvoice={checkouts[0].path}",)),
        Side("head", sys.executable, None, None, root, (*head_args, f"--zv-zipvoice={checkouts[1].path}")),
    )


def ab_runs(
    ids: Sequence[str],
    sides: tuple[Side, Side],
    pytest_args: Sequence[str],
    workdir: Path,
    processes: int = MIN_PROCESSES,
) -> tuple[list[ResultsFile], list[ResultsFile]]:
    """``processes`` runs of each side over the benchmarks ``ids`` (and nothing else), base first, then head,
    alternating; their results files (a run that measured nothing at all is left out)."""
    if processes < MIN_PROCESSES:
        raise ZvperfError(f"a confirmation needs at least {MIN_PROCESSES} processes per side, not {processes}.")
    selection = ["-k", " or ".join(pytest_name(name) for name in ids)]  # after the caller's: the last -k wins
    runs: dict[str, list[ResultsFile]] = {"base": [], "head": []}
    for index in range(1, processes + 1):
        for side in sides:
            out = workdir / f"{side.name}-{index}.json"
            measured = _run(side, out, [*pytest_args, *selection, *side.extra])
            if measured is not None:
                runs[side.name].append(measured)
    return runs["base"], runs["head"]


def confirm_report(
    report: GateReport,
    sides: tuple[Side, Side],
    pytest_args: Sequence[str],
    processes: int = MIN_PROCESSES,
    ids: Sequence[str] | None = None,
) -> GateReport:
    """The report with ``ids`` (default: its failed and inconclusive verdicts) confirmed A/B between ``sides``
    (unchanged when there are none)."""
    ids = [v.id for v in to_confirm(report)] if ids is None else list(ids)
    if not ids:
        return report
    with tempfile.TemporaryDirectory(prefix="zvperf-confirm-") as workdir:
        base_runs, head_runs = ab_runs(ids, sides, pytest_args, Path(workdir), processes)
    return confirmed(report, base_runs, head_runs, ids)
