"""``zvperf conform CASE_DIR``: check the engine against reference vectors of the official models."""

from __future__ import annotations

import argparse
from pathlib import Path

from zvperf.backends import check_runnable, get_backend
from zvperf.engine.conformance import load_case, run_case
from zvperf.engine.device import resolve_device
from zvperf.engine.precision import DTYPES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("case_dirs", nargs="+", type=Path, metavar="CASE_DIR")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", default="fp32", choices=list(DTYPES))
    parser.add_argument("--backend", default="torch", help="run the solve through this backend (default: torch)")


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    backend = get_backend(args.backend)
    check_runnable(backend, device, args.precision)
    failed = 0
    for case_dir in args.case_dirs:
        case = load_case(case_dir)
        checks = run_case(case, device=device, precision=args.precision, prepare=backend.prepare)
        print(f"{case_dir} ({case.info['model_name']}, {args.backend}, {device}, {args.precision})")
        for check in checks:
            verdict = "ok" if check.passed else "FAIL"
            print(f"  {check.name:<15} max error {check.error:.3e}  tolerance {check.tolerance:.0e}  {verdict}")
        failed += sum(not c.passed for c in checks)
    if failed:
        print(f"{failed} tensor(s) out of tolerance")
    return 1 if failed else 0
