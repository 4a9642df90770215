"""``zvperf bench --gpus all -- [pytest options]``: one benchmark process per GPU, results merged; ``--dry-run``: the
expected time to verdict of a matrix, from rows measured on the machine, running nothing."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zvperf.argtypes import bounded_float
from zvperf.gate.confirm import MIN_PROCESSES
from zvperf.gate.numbers import seconds
from zvperf.results.schema import load_results
from zvperf.results.summary import format_table
from zvperf.suite.launcher import launch, parse_gpus
from zvperf.suite.matrix import PRESET_NAMES, expand, preset
from zvperf.suite.verdict_time import H100_PROCESS_SECONDS, row_ids, verdict_time

H100_RESULTS = Path("reports/nvidia-h100-80gb-hbm3/results.json")  # from the repository root


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Each GPU runs `pytest --benchmark-only` over zvperf's benchmarks on its shard of the matrix, pinned with "
        "CUDA_VISIBLE_DEVICES; the shards' pytest-benchmark JSON is merged into --output. Options after `--` "
        "go to every pytest run (for example -k distill --zv-matrix guide). With --dry-run nothing runs: it prints "
        "how long a matrix's gate job would take (its processes, and the A/B confirmation of three rows), from "
        "the medians, spreads and round counts a results file measured."
    )
    p.add_argument("--gpus", default="all", help="'all' or a comma list of GPU indices (default: all)")
    p.add_argument("--output", type=Path, default=Path("results.json"), help="merged JSON (default: results.json)")
    p.add_argument("--dry-run", action="store_true", help="print the expected time to verdict; run nothing")
    p.add_argument("--matrix", choices=PRESET_NAMES, default="gate", help="with --dry-run: the matrix (default: gate)")
    p.add_argument(
        "--device", choices=("cuda", "cpu"), default="cuda", help="with --dry-run: its device (default: cuda)"
    )
    p.add_argument(
        "--measured",
        type=Path,
        default=H100_RESULTS,
        metavar="RESULTS",
        help=f"with --dry-run: the results whose rows give the times (default: {H100_RESULTS})",
    )
    p.add_argument(
        "--process-seconds",
        type=bounded_float(0, 3600),
        default=H100_PROCESS_SECONDS,
        metavar="S",
        help=f"with --dry-run: the fixed cost of one benchmark process (default: the H100's, {H100_PROCESS_SECONDS} s)",
    )
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: options for pytest")


def dry_run(args: argparse.Namespace) -> int:
    measured = load_results(args.measured)
    chosen = preset(args.matrix, args.device)
    ids = row_ids(expand(args.matrix, device=args.device))
    estimate = verdict_time(ids, measured, chosen, args.process_seconds, MIN_PROCESSES)
    print(
        f"zvperf bench --dry-run: the {args.matrix} matrix on {args.device}, from {args.measured} "
        f"({measured.hardware_key}); nothing runs"
    )
    rows = [
        {
            "row": row.id,
            "median": seconds(row.median) if row.median else "-",
            "IQR": f"{row.spread:.1%}" if row.spread is not None else "-",
            "rounds": f"{chosen.warmup_rounds}+{row.rounds}" if row.median else "-",
            "ends": row.why or "-",
            "seconds": f"{row.seconds:.1f}",
            "from": row.source,
        }
        for row in estimate.rows
    ]
    print("\n".join(line.rstrip() for line in format_table(rows, left=("row", "ends", "from"))))
    unmeasured = sum(not row.median for row in estimate.rows)
    minutes = estimate.total_seconds / 60
    confirmed = ", ".join(row.id for row in estimate.confirmed) or "none"
    print(
        f"per process: {args.process_seconds:.1f} s fixed (start, imports, building and verifying) and "
        f"{estimate.rows_seconds:.1f} s of rounds (warm-up + timed)"
        + (f"; {unmeasured} row(s) without a measured time not counted" if unmeasured else "")
    )
    print(
        f"{estimate.processes} judged process(es): {estimate.judged_seconds / 60:.1f} min; A/B confirmation of "
        f"{len(estimate.confirmed)} rows, {estimate.confirm_processes} processes a side ({confirmed}): "
        f"{estimate.confirm_seconds / 60:.1f} min"
    )
    print(f"expected time to verdict: {minutes:.1f} min")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.dry_run:
        return dry_run(args)
    extra = args.pytest_args[1:] if args.pytest_args[:1] == ["--"] else args.pytest_args
    gpus = parse_gpus(args.gpus)
    merged, failed = launch(gpus, extra, args.output)
    count = len(merged["benchmarks"])
    print(f"wrote {args.output}: {count} benchmarks from {len(gpus)} shard(s) on GPUs {','.join(gpus)}")
    for shard in failed:
        print(f"zvperf bench: shard failed on {shard}: its missing results are named in the JSON", file=sys.stderr)
    return 1 if failed else 0
