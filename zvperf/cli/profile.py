"""``zvperf profile CONFIG``: where one solve's time goes, by operator, with each operator's share and FLOP rate."""

from __future__ import annotations

import argparse

import torch

from zvperf.argtypes import bounded_int
from zvperf.engine.device import resolve_device
from zvperf.suite.matrix import parse_combo
from zvperf.suite.profiling import profile_solve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config",
        metavar="CONFIG",
        help="a benchmark configuration id, e.g. zipvoice_distill-4step-ort-cpu-fp32-843f (the text's own length "
        "without -NNNf; -bN for a batch)",
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--weights", default="auto", help="DIR, hub, synthetic or auto (hub cache, else synthetic)")
    parser.add_argument("--top", type=bounded_int(1), default=15, help="operators to list (default: 15)")
    parser.add_argument("--threads", type=bounded_int(1), help="CPU threads for torch and ONNX Runtime")


def run(args: argparse.Namespace) -> int:
    combo = parse_combo(args.config)
    if args.threads:
        torch.set_num_threads(args.threads)
    profile = profile_solve(combo, resolve_device(args.device), args.weights)
    for line in profile.lines(args.top):
        print(line)
    return 0
