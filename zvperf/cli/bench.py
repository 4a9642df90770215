"""``zvperf bench --gpus all -- [pytest options]``: one benchmark process per GPU, results merged."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zvperf.suite.launcher import launch, parse_gpus


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Each GPU runs `pytest --benchmark-only` over zvperf's benchmarks on its shard of the matrix, pinned with "
        "CUDA_VISIBLE_DEVICES; the shards' pytest-benchmark JSON is merged into --output. Options after `--` "
        "go to every pytest run (for example -k distill --zv-matrix guide)."
    )
    p.add_argument("--gpus", default="all", help="'all' or a comma list of GPU indices (default: all)")
    p.add_argument("--output", type=Path, default=Path("results.json"), help="merged JSON (default: results.json)")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: options for pytest")


def run(args: argparse.Namespace) -> int:
    extra = args.pytest_args[1:] if args.pytest_args[:1] == ["--"] else args.pytest_args
    gpus = parse_gpus(args.gpus)
    merged, failed = launch(gpus, extra, args.output)
    count = len(merged["benchmarks"])
    print(f"wrote {args.output}: {count} benchmarks from {len(gpus)} shard(s) on GPUs {','.join(gpus)}")
    for shard in failed:
        print(f"zvperf bench: shard failed on {shard}: its missing results are named in the JSON", file=sys.stderr)
    return 1 if failed else 0
