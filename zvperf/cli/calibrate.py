"""``zvperf calibrate``: how far the gate can be trusted on this machine, measured.

Each repetition makes a fresh baseline (from ``--baseline-runs`` runs, their rounds pooled and their medians kept),
then for no change and for each injected slowdown (``--zv-inject-slowdown``: every timed call is delayed by that
fraction of its own duration) ``--judged-runs`` runs pooled into the judged side, and judges each side with the
gate. A run is a false alarm when any of its rows fails without injection; each row's detections are counted per
slowdown. The runs of a repetition go in a shuffled order (seeded: reproducible), so a slow spell on the machine,
or a run after an idle one starting with more CPU boost, hits every size alike.

``--matrix gate`` calibrates the whole gate matrix, with its processes: the baseline pools its eight, the judged
side its three, slowdowns 10% and 25% by default (``--baseline-runs``, ``--judged-runs`` and ``--slowdowns``
override them).

With ``--confirm`` every failed or inconclusive verdict is then confirmed as the CI gate does it
(``zvperf confirm``): processes of the unchanged code ("base") and of the code with the injected slowdown
("head") alternate, and head is judged against base; the tables give both rates.

``--pool N`` is for a machine too slow for that: a repetition of the gate matrix takes 8 + 3 x 3 processes, plus
the A/B's, and 20 repetitions of the full-size CPU matrix would take a 2-core machine most of a day. It measures
N processes of the unchanged code once (reusing those ``--keep`` already holds) and draws every repetition's
baseline, judged side and A/B sides from them (seeded: reproducible), a slowdown injected by scaling the drawn
processes' round times (what ``--zv-inject-slowdown`` does inside each timed call, without its sleep's own
jitter). The repetitions share processes, so they are not independent: the header says so, with N.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import random
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import zvperf
from zvperf.argtypes import bounded_float, bounded_int, comma_list
from zvperf.errors import ZvperfError
from zvperf.gate import baselines, judge
from zvperf.gate.config import GateConfig, load_config
from zvperf.gate.confirm import MIN_PROCESSES, confirmed, to_confirm
from zvperf.gate.options import add_gate_options
from zvperf.gate.stats import BASELINE_PROCESSES, JUDGED_PROCESSES, MIN_SIDE
from zvperf.results.schema import ResultsFile, load_results
from zvperf.results.summary import format_table
from zvperf.suite.confirm import confirm_report, zvperf_sides
from zvperf.suite.launcher import PYTEST_ARGS, pytest_command
from zvperf.suite.matrix import PRESET_NAMES, preset

# Without pytest arguments: the distilled model's 2-step solver, full size, the quick matrix's rounds.
DEFAULT_PYTEST_ARGS = ("--zv-models=zipvoice_distill", "--zv-steps=2", "-k", "solver")
DEFAULT_SLOWDOWNS = (0.1, 0.25, 0.5)
MATRIX_SLOWDOWNS = (0.1, 0.25)  # what --matrix calibrates: the gate's threshold, and a clear regression


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = __doc__
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument(
        "--runs", type=bounded_int(1), default=5, help="repetitions (each: a baseline and a judged side per size)"
    )
    p.add_argument(
        "--matrix",
        choices=PRESET_NAMES,
        help="calibrate a whole matrix (gate: the pull request's), with its baseline and judged processes",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), help="with --matrix: its device (default: cuda when available)")
    p.add_argument(
        "--baseline-runs",
        type=bounded_int(MIN_SIDE),  # one run a side cannot be judged: the test compares process medians
        help="runs pooled into each repetition's baseline, as `zvperf baseline update A.json B.json ...` does "
        f"(default: the matrix's, else {BASELINE_PROCESSES})",
    )
    p.add_argument(
        "--judged-runs",
        type=bounded_int(MIN_SIDE),  # one run a side cannot be judged: the test compares process medians
        help="runs pooled into each judged side, as `zvperf compare A.json B.json ...` does (default: the matrix's, "
        f"else {JUDGED_PROCESSES})",
    )
    p.add_argument(
        "--slowdowns",
        type=comma_list(bounded_float(0, 10, open_low=True)),
        help="injected slowdowns to detect, comma list of fractions (default: 0.1,0.25,0.5; with --matrix 0.1,0.25)",
    )
    add_gate_options(p.add_argument)
    p.add_argument(
        "--confirm",
        action="store_true",
        help="confirm failed and inconclusive verdicts A/B (unchanged code against the injected one), as CI does",
    )
    p.add_argument(
        "--processes",
        type=bounded_int(MIN_PROCESSES),
        default=MIN_PROCESSES,
        help=f"with --confirm: processes of each side (default and minimum {MIN_PROCESSES})",
    )
    p.add_argument(
        "--pool",
        type=bounded_int(1),
        metavar="N",
        help="measure N unchanged processes once and draw each repetition's sides from them, slowdowns injected by "
        "scaling their round times (with --keep DIR, the processes DIR holds are reused)",
    )
    p.add_argument(
        "--keep", type=Path, metavar="DIR", help="keep every run's JSON and baseline here, to re-judge later"
    )
    p.add_argument(
        "pytest_args",
        nargs="*",
        metavar="-- PYTEST_ARGS",
        help=f"after --: what to run (default: {' '.join(DEFAULT_PYTEST_ARGS)}; with --matrix: its rows)",
    )


def _benchmark_run(out: Path, pytest_args: list[str], slowdown: float) -> ResultsFile:
    command = pytest_command(
        "-q", "-p", "no:cacheprovider", f"--benchmark-json={out}", f"--zv-inject-slowdown={slowdown}", *pytest_args
    )
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0 or not out.exists():
        tail = (completed.stdout + completed.stderr).strip().splitlines() or ["no output"]
        raise ZvperfError(f"the benchmark run failed (pytest exit {completed.returncode}): {tail[-1]}")
    return load_results(out)


Verdicts = dict[str, str]  # one judged side's row id -> status


@dataclasses.dataclass
class Tallies:
    """Each judged side's verdicts per injected slowdown (0 included), in the order of the repetitions: as first
    judged, and after confirmation."""

    first: dict[float, list[Verdicts]]
    confirmed: dict[float, list[Verdicts]] | None  # None without --confirm


def calibrate(
    runs: int,
    sizes: list[float],
    pytest_args: list[str],
    config: GateConfig,
    keep: Path | None = None,
    baseline_runs: int = BASELINE_PROCESSES,
    confirm_processes: int | None = None,
    judged_runs: int = JUDGED_PROCESSES,
) -> Tallies:
    """Verdicts per injected slowdown, over ``runs`` repetitions; with ``confirm_processes`` each failed or
    inconclusive verdict is confirmed A/B too (this code as the base, the injection in the head's processes)."""
    tallies = Tallies({size: [] for size in [0.0, *sizes]}, None)
    if confirm_processes is not None:
        tallies.confirmed = {size: [] for size in tallies.first}
    code = Path(zvperf.__file__).resolve().parents[1]  # the base checkout: this very code
    with contextlib.ExitStack() as stack:
        work = keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="zvperf-calibrate-")))
        work.mkdir(parents=True, exist_ok=True)
        order = random.Random(0)
        for repetition in range(1, runs + 1):
            # (file name, injected slowdown): the baseline runs inject nothing.
            sequence = [(f"baseline-{i}", 0.0) for i in range(1, baseline_runs + 1)]
            sequence += [(f"injected-{size:g}-{i}", size) for size in tallies.first for i in range(1, judged_runs + 1)]
            order.shuffle(sequence)
            measured = {
                name: _benchmark_run(work / f"{repetition}-{name}.json", pytest_args, size) for name, size in sequence
            }
            directory = work / f"baselines-{repetition}"
            baselines.update(directory, *(run for name, run in measured.items() if name.startswith("baseline-")))
            for size, verdicts in tallies.first.items():
                judged = [measured[f"injected-{size:g}-{i}"] for i in range(1, judged_runs + 1)]
                report = judge.compare(judged, directory, config)
                verdicts.append(_statuses(report))
                line = f"run {repetition}/{runs}, injected {size:.0%}: {_changes(report)}"
                if tallies.confirmed is not None and confirm_processes is not None:
                    head = [f"--zv-inject-slowdown={size}"] if size else []
                    report = confirm_report(report, zvperf_sides(code, head), pytest_args, confirm_processes)
                    tallies.confirmed[size].append(_statuses(report))
                    line += f"; confirmed: {_changes(report)}"
                print(line, flush=True)
    return tallies


def scaled(run: ResultsFile, factor: float, out: Path) -> ResultsFile:
    """A copy of ``run`` written to ``out`` with every round time (and the statistics of the rounds) times
    ``factor``, marked as measured with the injected slowdown ``factor - 1``."""
    document = json.loads(run.path.read_text())
    for benchmark in document["benchmarks"]:
        stats = benchmark["stats"]
        stats["data"] = [t * factor for t in stats["data"]]
        for key in ("min", "max", "mean", "median", "iqr", "q1", "q3", "stddev", "ld15iqr", "hd15iqr", "total"):
            if isinstance(stats.get(key), int | float):
                stats[key] *= factor
        stats["ops"] = 1 / stats["mean"] if stats.get("mean") else stats.get("ops")
        benchmark["extra_info"]["injected_slowdown"] = factor - 1
    document.setdefault("zvperf", {})["injected_slowdown"] = factor - 1
    out.write_text(json.dumps(document))
    return load_results(out)


def check_pool(size: int, baseline_runs: int, judged_runs: int, confirm_processes: int | None) -> None:
    """Raise when a pool of ``size`` processes cannot give a repetition's distinct draws."""
    needed = max(baseline_runs + judged_runs, 2 * (confirm_processes or 0))
    if size < needed:
        raise ZvperfError(
            f"--pool {size} is too small: a repetition draws {needed} distinct processes from it "
            f"({baseline_runs} baseline and {judged_runs} judged"
            + (f", or {confirm_processes} a side for the A/B" if confirm_processes else "")
            + ")."
        )


def measure_pool(size: int, pytest_args: list[str], work: Path) -> list[ResultsFile]:
    """``size`` processes of the unchanged code: those ``work`` already holds (pool-N.json), the rest measured."""
    pool = []
    for index in range(1, size + 1):
        path = work / f"pool-{index}.json"
        kept = path.is_file() and path.stat().st_size > 0
        pool.append(load_results(path) if kept else _benchmark_run(path, pytest_args, 0.0))
        print(f"process {index}/{size} {'kept' if kept else 'measured'}", flush=True)
    return pool


def calibrate_pool(
    runs: int,
    sizes: list[float],
    pool: list[ResultsFile],
    config: GateConfig,
    work: Path,
    baseline_runs: int = BASELINE_PROCESSES,
    confirm_processes: int | None = None,
    judged_runs: int = JUDGED_PROCESSES,
) -> Tallies:
    """``calibrate`` with every side drawn from ``pool``: each repetition a baseline and a judged side of distinct
    processes, the judged side scaled by each slowdown; with ``confirm_processes`` each failed or inconclusive
    verdict confirmed A/B from two more draws of distinct processes, the head's scaled."""
    check_pool(len(pool), baseline_runs, judged_runs, confirm_processes)
    tallies = Tallies({size: [] for size in [0.0, *sizes]}, None)
    if confirm_processes is not None:
        tallies.confirmed = {size: [] for size in tallies.first}
    draw = random.Random(0)

    def slowed(runs: list[ResultsFile], size: float, label: str) -> list[ResultsFile]:
        if not size:
            return runs
        return [scaled(run, 1 + size, work / f"{label}-{size:g}-{i}.json") for i, run in enumerate(runs, 1)]

    for repetition in range(1, runs + 1):
        drawn = draw.sample(pool, baseline_runs + judged_runs)
        directory = work / f"baselines-{repetition}"
        baselines.update(directory, *drawn[:baseline_runs])
        for size, verdicts in tallies.first.items():
            report = judge.compare(slowed(drawn[baseline_runs:], size, f"{repetition}-judged"), directory, config)
            verdicts.append(_statuses(report))
            line = f"run {repetition}/{runs}, injected {size:.0%}: {_changes(report)}"
            if tallies.confirmed is not None and confirm_processes is not None:
                ab = draw.sample(pool, 2 * confirm_processes)
                doubtful = [v.id for v in to_confirm(report)]
                if doubtful:
                    head = slowed(ab[confirm_processes:], size, f"{repetition}-head")
                    report = confirmed(report, ab[:confirm_processes], head, doubtful)
                tallies.confirmed[size].append(_statuses(report))
                line += f"; confirmed: {_changes(report)}"
            print(line, flush=True)
    return tallies


def _statuses(report: judge.GateReport) -> Verdicts:
    return {v.id: v.status for v in report.verdicts if v.change is not None}


def _changes(report: judge.GateReport) -> str:
    return ", ".join(
        f"{v.id} {v.status} ({v.change:+.1%}{'; ' + v.reason if v.reason else ''})"
        for v in report.verdicts
        if v.change is not None
    )


def _runs_rate(size: float, sides: list[Verdicts]) -> str:
    """Unchanged: the share of runs with any failing row; injected: the share of row verdicts that failed."""
    if not sides:
        return "-"
    if size == 0:
        alarms = sum(judge.FAIL in side.values() for side in sides)
        return f"false alarms {alarms / len(sides):.0%} ({alarms}/{len(sides)} runs)"
    total = sum(len(side) for side in sides)
    failed = sum(status == judge.FAIL for side in sides for status in side.values())
    return f"detected {failed / total:.0%} ({failed}/{total} rows)" if total else "-"


def _summary_rows(verdicts: dict[float, list[Verdicts]], after: str = "") -> list[dict[str, str]]:
    rows = []
    for size, sides in verdicts.items():
        counts = Counter(status for side in sides for status in side.values())
        rows.append(
            {
                "injected": f"{size:.0%}",
                "runs": str(len(sides)),
                "rows judged": str(sum(counts.values())),
                "fail": str(counts[judge.FAIL]),
                "inconclusive": str(counts[judge.INCONCLUSIVE]),
                "pass": str(counts[judge.PASS]),
                "improved": str(counts[judge.IMPROVED]),
                f"rate{after}": _runs_rate(size, sides),
            }
        )
    return rows


def _per_row(tallies: Tallies) -> list[dict[str, str]]:
    """Each row's detections per injected slowdown: failed in how many of the repetitions."""
    sizes = [size for size in tallies.first if size]
    ids = sorted({row for sides in tallies.first.values() for side in sides for row in side})
    table = []
    for row in ids:
        line = {"row": row}
        for label, verdicts in (("", tallies.first), (" confirmed", tallies.confirmed)):
            for size in sizes if verdicts is not None else []:
                sides = verdicts[size] if verdicts is not None else []
                failed = sum(side.get(row) == judge.FAIL for side in sides)
                line[f"{size:.0%}{label}"] = f"{failed}/{sum(row in side for side in sides)}"
        table.append(line)
    return table


def run(args: argparse.Namespace) -> int:
    config = load_config(args.gate_config, args.baselines_dir)
    pytest_args = args.pytest_args or ([] if args.matrix else list(DEFAULT_PYTEST_ARGS))
    # The gate's test compares processes: as many a side as the gate matrix's, by default.
    baseline_runs, judged_runs = args.baseline_runs or BASELINE_PROCESSES, args.judged_runs or JUDGED_PROCESSES
    sizes = args.slowdowns
    if args.matrix:
        device = args.device or _default_device()
        chosen = preset(args.matrix, device)
        pytest_args = [f"--zv-matrix={args.matrix}", f"--zv-device={device}", *pytest_args]
        baseline_runs = args.baseline_runs or chosen.baseline_processes
        judged_runs = args.judged_runs or chosen.processes
    sizes = sizes or list(MATRIX_SLOWDOWNS if args.matrix else DEFAULT_SLOWDOWNS)
    rule = config.defaults
    confirmation = f"; failed and inconclusive verdicts confirmed A/B, {args.processes} processes a side"
    print(
        f"zvperf calibrate: {args.runs} repetitions of `pytest {' '.join([*PYTEST_ARGS, *pytest_args])}`, "
        f"baselines pooled from {baseline_runs} run(s), judged sides from {judged_runs}; gate: over "
        f"{rule.threshold:.0%} slower, p < {rule.alpha:g}, spread limit {rule.max_spread:.0%}"
        + (", the host's speed taken out where both sides timed its reference" if rule.host_adjusted else "")
        + (
            f" ({', '.join(o.name for o in config.overrides)} of {config.source} where they match)"
            if config.overrides
            else ""
        )
        + (confirmation if args.confirm else ""),
        flush=True,
    )
    processes = args.processes if args.confirm else None
    if args.pool:
        check_pool(args.pool, baseline_runs, judged_runs, processes)
        print(
            f"drawn from a pool of {args.pool} processes of the unchanged code, slowdowns scaled into their round "
            "times: the repetitions share processes and are not independent",
            flush=True,
        )
        with contextlib.ExitStack() as stack:
            work = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="zvperf-calibrate-")))
            work.mkdir(parents=True, exist_ok=True)
            pool = measure_pool(args.pool, pytest_args, work)
            tallies = calibrate_pool(args.runs, sizes, pool, config, work, baseline_runs, processes, judged_runs)
    else:
        tallies = calibrate(args.runs, sizes, pytest_args, config, args.keep, baseline_runs, processes, judged_runs)
    rows = _summary_rows(tallies.first)
    if tallies.confirmed is not None:
        for row, confirmed in zip(rows, _summary_rows(tallies.confirmed, " after confirmation"), strict=True):
            row["confirmed fail"] = confirmed["fail"]
            row["confirmed inconclusive"] = confirmed["inconclusive"]
            row["rate after confirmation"] = confirmed["rate after confirmation"]
    print("\n".join(line.rstrip() for line in format_table(rows, left=("rate", "rate after confirmation"))))
    print("detected per row (failed / judged, per injected slowdown):")
    print("\n".join(line.rstrip() for line in format_table(_per_row(tallies), left=("row",))))
    return 0


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
