"""``zvperf calibrate``: how far the gate can be trusted on this machine, measured.

Each repetition makes a fresh baseline (from ``--baseline-runs`` runs, their rounds pooled), then
one run without change and one per injected slowdown (``--zv-inject-slowdown``: every timed call is
delayed by that fraction of its own duration), and judges each with the gate. A failure without
injection is a false alarm; a failure with one is a detection. The runs of a repetition go in a
shuffled order (seeded: reproducible), so a slow spell on the machine, or a run after an idle one
starting with more CPU boost, hits every size alike.

With ``--confirm`` every failed or inconclusive verdict is then confirmed as the CI gate does it
(``zvperf confirm``): processes of the unchanged code ("base") and of the code with the injected
slowdown ("head") alternate, and head is judged against base; the table gives both rates.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
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
from zvperf.gate.confirm import MIN_PROCESSES
from zvperf.gate.options import add_gate_options
from zvperf.results.schema import ResultsFile, load_results
from zvperf.results.summary import format_table
from zvperf.suite.confirm import confirm_report, zvperf_sides
from zvperf.suite.launcher import PYTEST_ARGS, pytest_command

# Without pytest arguments: the distilled model's 2-step solver, full size, the quick matrix's rounds.
DEFAULT_PYTEST_ARGS = ("--zv-models=zipvoice_distill", "--zv-steps=2", "-k", "solver")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = __doc__
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument(
        "--runs", type=bounded_int(1), default=5, help="repetitions (each: a baseline run and one run per size)"
    )
    p.add_argument(
        "--baseline-runs",
        type=bounded_int(1),
        default=1,
        help="runs pooled into each repetition's baseline, as `zvperf baseline update A.json B.json ...` does",
    )
    p.add_argument(
        "--slowdowns",
        type=comma_list(bounded_float(0, 10, open_low=True)),
        default=[0.1, 0.25, 0.5],
        help="injected slowdowns to detect, comma list of fractions (default: 0.1,0.25,0.5)",
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
        "--keep", type=Path, metavar="DIR", help="keep every run's JSON and baseline here, to re-judge later"
    )
    p.add_argument(
        "pytest_args",
        nargs="*",
        metavar="-- PYTEST_ARGS",
        help=f"after --: what to run (default: {' '.join(DEFAULT_PYTEST_ARGS)})",
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


@dataclasses.dataclass
class Tallies:
    """Verdict counts per injected slowdown (0 included): as first judged, and after confirmation."""

    first: dict[float, Counter]
    confirmed: dict[float, Counter] | None  # None without --confirm


def calibrate(
    runs: int,
    sizes: list[float],
    pytest_args: list[str],
    config: GateConfig,
    keep: Path | None = None,
    baseline_runs: int = 1,
    confirm_processes: int | None = None,
) -> Tallies:
    """Verdict counts per injected slowdown, over ``runs`` repetitions; with ``confirm_processes`` each failed or
    inconclusive verdict is confirmed A/B too (this code as the base, the injection in the head's processes)."""
    tallies = Tallies({size: Counter() for size in [0.0, *sizes]}, None)
    if confirm_processes is not None:
        tallies.confirmed = {size: Counter() for size in tallies.first}
    code = Path(zvperf.__file__).resolve().parents[1]  # the base checkout: this very code
    with contextlib.ExitStack() as stack:
        work = keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="zvperf-calibrate-")))
        work.mkdir(parents=True, exist_ok=True)
        order = random.Random(0)
        for repetition in range(1, runs + 1):
            # (file name, injected slowdown): the baseline runs inject nothing.
            sequence = [(f"baseline-{i}", 0.0) for i in range(1, baseline_runs + 1)]
            sequence += [(f"injected-{size:g}", size) for size in tallies.first]
            order.shuffle(sequence)
            measured = {
                name: _benchmark_run(work / f"{repetition}-{name}.json", pytest_args, size) for name, size in sequence
            }
            directory = work / f"baselines-{repetition}"
            baselines.update(directory, *(run for name, run in measured.items() if name.startswith("baseline-")))
            for size, counts in tallies.first.items():
                report = judge.compare(measured[f"injected-{size:g}"], directory, config)
                counts.update(v.status for v in report.verdicts)
                line = f"run {repetition}/{runs}, injected {size:.0%}: {_changes(report)}"
                if tallies.confirmed is not None and confirm_processes is not None:
                    head = [f"--zv-inject-slowdown={size}"] if size else []
                    report = confirm_report(report, zvperf_sides(code, head), pytest_args, confirm_processes)
                    tallies.confirmed[size].update(v.status for v in report.verdicts)
                    line += f"; confirmed: {_changes(report)}"
                print(line, flush=True)
    return tallies


def _changes(report: judge.GateReport) -> str:
    return ", ".join(
        f"{v.id} {v.status} ({v.change:+.1%}{'; ' + v.reason if v.reason else ''})"
        for v in report.verdicts
        if v.change is not None
    )


def _rate(size: float, counts: Counter) -> str:
    total, failed = sum(counts.values()), counts[judge.FAIL]
    what = "false alarms" if size == 0 else "detected"
    return f"{what} {failed / total:.0%} ({failed}/{total})" if total else "-"


def run(args: argparse.Namespace) -> int:
    sizes = args.slowdowns
    config = load_config(args.gate_config, args.baselines_dir)
    pytest_args = args.pytest_args or list(DEFAULT_PYTEST_ARGS)
    rule = config.defaults
    confirmation = f"; failed and inconclusive verdicts confirmed A/B, {args.processes} processes a side"
    print(
        f"zvperf calibrate: {args.runs} repetitions of `pytest {' '.join([*PYTEST_ARGS, *pytest_args])}`, "
        "baselines pooled from "
        f"{args.baseline_runs} run(s); gate: over "
        f"{rule.threshold:.0%} slower, p < {rule.alpha:g}, spread limit {rule.max_spread:.0%}"
        + (confirmation if args.confirm else ""),
        flush=True,
    )
    processes = args.processes if args.confirm else None
    tallies = calibrate(args.runs, sizes, pytest_args, config, args.keep, args.baseline_runs, processes)
    rows = []
    for size, counts in tallies.first.items():
        row = {
            "injected": f"{size:.0%}",
            "judged": str(sum(counts.values())),
            "fail": str(counts[judge.FAIL]),
            "inconclusive": str(counts[judge.INCONCLUSIVE]),
            "pass": str(counts[judge.PASS]),
            "improved": str(counts[judge.IMPROVED]),
            "rate": _rate(size, counts),
        }
        if tallies.confirmed is not None:
            confirmed = tallies.confirmed[size]
            row["confirmed fail"] = str(confirmed[judge.FAIL])
            row["confirmed inconclusive"] = str(confirmed[judge.INCONCLUSIVE])
            row["rate after confirmation"] = _rate(size, confirmed)
        rows.append(row)
    print("\n".join(line.rstrip() for line in format_table(rows, left=("rate", "rate after confirmation"))))
    return 0
