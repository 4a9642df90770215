"""What the two stores of results kept in the repository share: the baselines (``zvperf.gate.baselines``) and
the history (``zvperf.history``) each keep one file per hardware key, with the software versions of each run and a
bounded number of raw round times."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from zvperf.errors import ZvperfError
from zvperf.results.schema import ResultsFile

# The versions whose change can move a timing: the gate warns when they differ, the history records them.
# "zipvoice": the ZipVoice checkout the run's official rows ran (its commit, +dirty), said only for those rows.
SOFTWARE_KEYS = ("torch", "cuda", "driver", "tensorrt", "onnxruntime", "zipvoice")
_KEY_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def run_versions(results: ResultsFile) -> dict[str, str | None]:
    """The SOFTWARE_KEYS versions a results file was measured with (the driver comes from the GPU facts)."""
    software = results.zvperf_machine.get("software") or {}
    gpu = results.zvperf_machine.get("gpu") or {}
    versions = {key: software.get(key) for key in SOFTWARE_KEYS}
    versions["driver"] = gpu.get("driver")
    versions["zipvoice"] = (results.zvperf_machine.get("zipvoice") or {}).get("label")
    return versions


# What a store records of the machine: what the hardware key stands for, and the CPU's vector and matrix flags,
# with which the gate warns when a key matches but the flags do not.
MACHINE_KEYS = ("cpu", "cpu_cores", "cpu_family", "cpu_model_number", "cpu_isa", "cpu_flags")


def machine_summary(results: ResultsFile) -> dict[str, Any]:
    """What a hardware key stands for: the CPU (model, cores, family, ISA level, flags), the GPU's name."""
    facts = results.zvperf_machine
    gpu = facts.get("gpu") or {}
    return {**{key: facts.get(key) for key in MACHINE_KEYS if key in facts}, "gpu": gpu.get("name")}


def key_path(directory: Path, hardware_key: str, suffix: str) -> Path:
    """``directory/<hardware key><suffix>``; a key that is not a plain file name is an error."""
    if not _KEY_PATTERN.match(hardware_key):
        raise ZvperfError(f"hardware key {hardware_key!r} is not usable as a file name.")
    return directory / f"{hardware_key}{suffix}"


def keys_in(directory: Path, suffix: str) -> list[str]:
    """The hardware keys that have a ``<key><suffix>`` file in ``directory``."""
    if not directory.is_dir():
        return []
    names = (p.name.removesuffix(suffix) for p in directory.glob(f"*{suffix}"))
    return sorted(name for name in names if _KEY_PATTERN.match(name))


def order_statistics(data: list[float], limit: int) -> list[float]:
    """``data`` sorted, cut to at most ``limit`` evenly spaced order statistics (the smallest and largest kept), so
    the distribution's shape (what a rank test compares, what a plot shows) survives the cut."""
    values = sorted(data)
    if len(values) > limit:
        last = len(values) - 1
        values = [values[round(i * last / (limit - 1))] for i in range(limit)]
    return values
