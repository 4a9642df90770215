"""Several GPUs, one benchmark process each: the matrix split into shards, each process pinned to its GPU
with CUDA_VISIBLE_DEVICES, their JSON merged into one file.

A CUDA_VISIBLE_DEVICES the launcher inherits (a runner given some of a machine's GPUs) is split, not
overwritten: each shard gets one of its entries, as written there (an index or a UUID).

pytest-benchmark refuses to time under pytest-xdist (parallel workers would disturb each other's
timings on one device), so this launcher runs independent pytest processes instead: each owns a whole
GPU, and each shard holds whole configurations, so no model is built twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zvperf import processes
from zvperf.errors import ZvperfError
from zvperf.files import read_json, write_atomic

# What every benchmark process collects: the suite's own module, so an installed zvperf runs it from anywhere.
BENCHMARKS_MODULE = "zvperf.suite.benchmarks"


PYTEST_ARGS = ("--benchmark-only", "--pyargs", BENCHMARKS_MODULE)


def pytest_command(*args: str, python: str | None = None) -> list[str]:
    """``python -m pytest --benchmark-only`` over zvperf's benchmarks, with ``args`` (``python``: this one)."""
    return [python or sys.executable, "-m", "pytest", *PYTEST_ARGS, *args]


def visible_devices(value: str) -> list[str]:
    """The devices a CUDA_VISIBLE_DEVICES value makes visible, as it names them, by CUDA's rules: comma-separated
    indices or GPU-/MIG- UUIDs, read up to the first entry that is neither; a device named twice makes none
    visible."""
    devices: list[str] = []
    for entry in value.split(","):
        entry = entry.strip()
        if not (entry.isdigit() or entry.startswith(("GPU-", "MIG-"))):
            break
        if entry in devices:
            return []
        devices.append(entry)
    return devices


def parse_gpus(spec: str, count: int | None = None, inherited: str | None = None) -> list[str]:
    """``all`` (every visible GPU) or a comma list of indices among the visible ones: the CUDA_VISIBLE_DEVICES
    value of each shard. ``inherited``: this process's CUDA_VISIBLE_DEVICES (default: the environment's), whose
    entries the shards then get."""
    inherited = os.environ.get("CUDA_VISIBLE_DEVICES") if inherited is None else inherited
    visible = visible_devices(inherited) if inherited is not None else None
    if spec == "all":
        if visible is None:
            visible = [str(i) for i in range(visible_gpu_count() if count is None else count)]
        if not visible:
            where = f"CUDA_VISIBLE_DEVICES={inherited!r}" if inherited is not None else "this machine"
            raise ZvperfError(f"--gpus all: no GPU is visible ({where}; give indices to run shards anyway).")
        return visible
    gpus = [part.strip() for part in spec.split(",") if part.strip()]
    if not gpus or not all(g.isdigit() for g in gpus) or len(set(gpus)) != len(gpus):
        raise ZvperfError(f"--gpus {spec!r}: expected 'all' or distinct GPU indices such as 0,1.")
    if visible is None:
        return gpus
    beyond = [g for g in gpus if int(g) >= len(visible)]
    if beyond:
        raise ZvperfError(
            f"--gpus {spec!r}: GPU {beyond[0]} is not among the {len(visible)} that CUDA_VISIBLE_DEVICES={inherited!r} "
            "makes visible (indices count from 0 within that list)."
        )
    return [visible[int(g)] for g in gpus]


def visible_gpu_count() -> int:
    """GPUs through NVML, which does not initialise CUDA in this (launching) process; else torch's count."""
    from zvperf.suite.telemetry import load_nvml

    nvml, _ = load_nvml()
    if nvml is not None:
        return int(nvml.nvmlDeviceGetCount())
    import torch

    return torch.cuda.device_count()


def run_shards(gpus: Sequence[str], pytest_args: Sequence[str], workdir: Path) -> tuple[list[Path], list[str]]:
    """Start one ``pytest --benchmark-only`` per GPU at once, wait for all, and return their JSON files and the
    shards that failed (a benchmark that failed or errored, a crash): the files hold what the others measured.
    Each shard is a process group of its own: when the launcher stops (the shards' end, Ctrl-C, an error), every
    process any shard started is gone before it returns."""
    outs, failed = [], []
    with contextlib.ExitStack() as stack:
        shards = []
        for index, gpu in enumerate(gpus):
            out = workdir / f"shard-{index}-gpu{gpu}.json"
            command = pytest_command(f"--benchmark-json={out}", f"--zv-shard={index}/{len(gpus)}", *pytest_args)
            # fp32 rows are IEEE fp32: the one way to keep ONNX Runtime's TensorRT provider from TF32 (unless set).
            env = {"NVIDIA_TF32_OVERRIDE": "0", **os.environ, "CUDA_VISIBLE_DEVICES": gpu}
            log = stack.enter_context((workdir / f"shard-{index}.log").open("w"))
            process = stack.enter_context(processes.group(command, env=env, stdout=log, stderr=subprocess.STDOUT))
            shards.append((gpu, log, process))
            outs.append(out)
        for gpu, log, process in shards:
            if process.wait() != 0:
                tail = Path(log.name).read_text(errors="replace").strip().splitlines() or ["no output"]
                failed.append(f"GPU {gpu} (pytest exit {process.returncode}: {tail[-1]})")
    return outs, failed


def _read_shard(path: Path) -> dict[str, Any] | None:
    """A shard's results, or None where it wrote none: no file, or the empty one pytest-benchmark creates when it
    starts and fills only at the end (a shard that crashed or was stopped)."""
    path = Path(path)
    if not path.is_file() or not path.stat().st_size:
        return None
    shard: dict[str, Any] = read_json(path)
    return shard


def merge(paths: Sequence[Path]) -> dict[str, Any]:
    """One pytest-benchmark JSON from shards measured on the same kind of GPU (one hardware key)."""
    shards = [shard for shard in map(_read_shard, paths) if shard is not None]
    if not shards:
        raise ZvperfError("no shard wrote results (was every benchmark skipped or deselected?).")
    keys = sorted({s["machine_info"].get("zvperf", {}).get("hardware_key", "unknown") for s in shards})
    if len(keys) > 1:
        raise ZvperfError(
            f"the GPUs are of different kinds ({', '.join(keys)}): run --gpus once per kind, "
            "so that each result file has one hardware key."
        )
    merged = dict(shards[0])
    merged["benchmarks"] = []
    for index, shard in enumerate(shards):
        zvperf = shard["machine_info"].get("zvperf", {})
        for bench in shard["benchmarks"]:
            bench.setdefault("extra_info", {})["shard"] = {
                "index": index,
                "cuda_visible_devices": zvperf.get("cuda_visible_devices"),
            }
            merged["benchmarks"].append(bench)
    # What each shard collected and did not time, and why (results format 3): the gate names them.
    merged["zvperf"] = {**shards[0].get("zvperf", {}), "unmeasured": {}}
    for shard in shards:
        merged["zvperf"]["unmeasured"].update((shard.get("zvperf") or {}).get("unmeasured") or {})
    merged["machine_info"] = dict(shards[0]["machine_info"])
    providers: dict[str, list[str]] = {}
    for shard in shards:  # each shard built its own backends
        providers |= shard["machine_info"].get("zvperf", {}).get("onnxruntime_providers", {})
    merged["machine_info"]["zvperf"] = {
        **shards[0]["machine_info"].get("zvperf", {}),
        "shards": [s["machine_info"].get("zvperf", {}).get("cuda_visible_devices") for s in shards],
        "onnxruntime_providers": providers,
    }
    return merged


def launch(gpus: Sequence[str], pytest_args: Sequence[str], output: Path) -> tuple[dict[str, Any], list[str]]:
    """Run the shards and write the merged JSON to ``output`` (through a temporary file and a rename); returns it
    and the shards that failed, whose results are missing from it."""
    with tempfile.TemporaryDirectory(prefix="zvperf-shards-") as workdir:
        paths, failed = run_shards(gpus, pytest_args, Path(workdir))
        if failed and not any(path.is_file() for path in paths):
            raise ZvperfError(f"every benchmark shard failed: {'; '.join(failed)}.")
        merged = merge(paths)
    write_atomic(output, json.dumps(merged, indent=2) + "\n")
    return merged, failed
