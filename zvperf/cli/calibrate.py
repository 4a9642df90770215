"""``zvperf calibrate``: how far the gate can be trusted on this machine, measured.

Each repetition makes a fresh baseline (from ``--baseline-runs`` runs, their rounds pooled), then
one run without change and one per injected slowdown (``--zv-inject-slowdown``: every timed call is
delayed by that fraction of its own duration), and judges each with the gate. A failure without
injection is a false alarm; a failure with one is a detection. The runs of a repetition go in a
shuffled order (seeded: reproducible), so a slow spell on the machine, or a run after an idle one
starting with more CPU boost, hits every size alike.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from zvperf.bench import baselines, gate
from zvperf.bench.gate_config import GateConfig, load_config
from zvperf.bench.results import ResultsFile, load_results
from zvperf.bench.summary import format_table
from zvperf.errors import ZvperfError

# Without pytest arguments: the distilled model's 2-step solver, full size, the quick matrix's rounds.
DEFAULT_PYTEST_ARGS = ("tests/test_benchmarks.py", "--zv-models=zipvoice_distill", "--zv-steps=2", "-k", "solver")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="measure the gate's false-alarm and detection rates on this machine with injected slowdowns",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--runs", type=int, default=5, help="repetitions (each: a baseline run and one run per size)")
    p.add_argument(
        "--baseline-runs",
        type=int,
        default=1,
        help="runs pooled into each repetition's baseline, as `zvperf baseline update A.json B.json ...` does",
    )
    p.add_argument("--slowdowns", default="0.1,0.25,0.5", help="injected slowdowns to detect, comma list of fractions")
    p.add_argument("--baselines-dir", type=Path, default=baselines.DEFAULT_DIR, help="where gate.toml is looked for")
    p.add_argument("--config", type=Path, help="gate settings (default: BASELINES_DIR/gate.toml when present)")
    p.add_argument(
        "--keep", type=Path, metavar="DIR", help="keep every run's JSON and baseline here, to re-judge later"
    )
    p.add_argument(
        "pytest_args",
        nargs="*",
        metavar="-- PYTEST_ARGS",
        help=f"after --: what to run (default: {' '.join(DEFAULT_PYTEST_ARGS)})",
    )
    p.set_defaults(run=run)


def _slowdowns(text: str) -> list[float]:
    try:
        sizes = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ZvperfError(f"--slowdowns: cannot read {text!r} as a comma list of fractions like 0.1,0.25.") from None
    if not sizes or not all(0 < s <= 10 for s in sizes):
        raise ZvperfError(f"--slowdowns: {text!r} must list fractions above 0 and at most 10.")
    return sizes


def _benchmark_run(out: Path, pytest_args: list[str], slowdown: float) -> ResultsFile:
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-only",
        f"--benchmark-json={out}", f"--zv-inject-slowdown={slowdown}", *pytest_args,
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0 or not out.exists():
        tail = (completed.stdout + completed.stderr).strip().splitlines() or ["no output"]
        raise ZvperfError(f"the benchmark run failed (pytest exit {completed.returncode}): {tail[-1]}")
    return load_results(out)


def calibrate(
    runs: int,
    sizes: list[float],
    pytest_args: list[str],
    config: GateConfig,
    keep: Path | None = None,
    baseline_runs: int = 1,
) -> dict[float, Counter]:
    """Verdict counts per injected slowdown (0 included), over ``runs`` repetitions."""
    tallies: dict[float, Counter] = {size: Counter() for size in [0.0, *sizes]}
    with contextlib.ExitStack() as stack:
        work = keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="zvperf-calibrate-")))
        work.mkdir(parents=True, exist_ok=True)
        order = random.Random(0)
        for repetition in range(1, runs + 1):
            # (file name, injected slowdown): the baseline runs inject nothing.
            sequence = [(f"baseline-{i}", 0.0) for i in range(1, baseline_runs + 1)]
            sequence += [(f"injected-{size:g}", size) for size in tallies]
            order.shuffle(sequence)
            measured = {
                name: _benchmark_run(work / f"{repetition}-{name}.json", pytest_args, size) for name, size in sequence
            }
            directory = work / f"baselines-{repetition}"
            baselines.update(directory, *(run for name, run in measured.items() if name.startswith("baseline-")))
            for size in tallies:
                report = gate.compare(measured[f"injected-{size:g}"], directory, config)
                tallies[size].update(v.status for v in report.verdicts)
                changes = ", ".join(
                    f"{v.id} {v.status} ({v.change:+.1%}{'; ' + v.reason if v.reason else ''})"
                    for v in report.verdicts
                    if v.change is not None
                )
                print(f"run {repetition}/{runs}, injected {size:.0%}: {changes}", flush=True)
    return tallies


def run(args: argparse.Namespace) -> int:
    for option, value in (("--runs", args.runs), ("--baseline-runs", args.baseline_runs)):
        if value < 1:
            raise ZvperfError(f"{option} must be at least 1, got {value}.")
    sizes = _slowdowns(args.slowdowns)
    config = load_config(args.config, args.baselines_dir)
    pytest_args = args.pytest_args or list(DEFAULT_PYTEST_ARGS)
    rule = config.defaults
    print(
        f"zvperf calibrate: {args.runs} repetitions of `pytest {' '.join(pytest_args)}`, baselines pooled from "
        f"{args.baseline_runs} run(s); gate: over "
        f"{rule.threshold:.0%} slower, p < {rule.alpha:g}, spread limit {rule.max_spread:.0%}",
        flush=True,
    )
    tallies = calibrate(args.runs, sizes, pytest_args, config, args.keep, args.baseline_runs)
    rows = []
    for size, counts in tallies.items():
        total = sum(counts.values())
        failed = counts[gate.FAIL]
        what = "false alarms" if size == 0 else "detected"
        rows.append(
            {
                "injected": f"{size:.0%}",
                "judged": str(total),
                "fail": str(failed),
                "inconclusive": str(counts[gate.INCONCLUSIVE]),
                "pass": str(counts[gate.PASS]),
                "improved": str(counts[gate.IMPROVED]),
                "rate": f"{what} {failed / total:.0%} ({failed}/{total})" if total else "-",
            }
        )
    print("\n".join(line.rstrip() for line in format_table(rows, left=("rate",))))
    return 0
