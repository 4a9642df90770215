"""What machine and software a result was measured on, and the hardware key baselines are filed under.

Only stable facts go here (names, versions, core counts); clocks and temperatures change from run
to run and would make every comparison warn, so they live in the per-benchmark telemetry instead.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
from typing import Any

import torch

from zvperf import __version__
from zvperf.engine.device import cpu_capabilities


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# Instruction-set flags that decide which CPU paths are fast: native half precision, int8 without saturation.
ISA_FLAGS = (
    "avx2", "avx512_f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_fp16", "amx_int8",
    "bf16", "fp16_arith", "i8mm", "sve",
)  # fmt: skip


def cpu_isa() -> list[str]:
    """The CPU's flags among ISA_FLAGS (as torch detects them)."""
    capabilities = cpu_capabilities()
    return [flag for flag in ISA_FLAGS if capabilities.get(flag) is True]


def cpu_family_model() -> str | None:
    """``family 26 model 2``: what tells CPUs of one brand name apart (a VM may show only "AMD EPYC")."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("cpu family", "model") and key.strip() not in fields:
                    fields[key.strip()] = value.strip()
                if not line.strip():
                    break
    except OSError:
        return None
    if len(fields) < 2:
        return None
    return f"family {fields['cpu family']} model {fields['model']}"


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def gpu_info() -> dict[str, Any] | None:
    """The current CUDA device: name, memory, compute capability, driver (through NVML when present)."""
    if not torch.cuda.is_available():
        return None
    index = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    info: dict[str, Any] = {
        "name": props.name,
        "memory_gib": round(props.total_memory / 2**30, 1),
        "compute_capability": f"{props.major}.{props.minor}",
        "count": torch.cuda.device_count(),
    }
    from zvperf.suite.telemetry import load_nvml

    nvml, _ = load_nvml()
    if nvml is not None:
        info["driver"] = nvml.nvmlSystemGetDriverVersion()
    return info


def software_versions() -> dict[str, str | None]:
    return {
        "zvperf": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None,
        "tensorrt": _package_version("tensorrt"),
        "onnxruntime": _package_version("onnxruntime-gpu") or _package_version("onnxruntime"),
        "vocos": _package_version("vocos"),
    }


def _slug(text: str) -> str:
    text = re.sub(r"\((R|TM|tm|r)\)", "", text)
    text = re.sub(r"@.*$", "", text)  # the nominal clock
    text = re.sub(r"\b(CPU|Processor|[0-9]+-Core)\b", "", text)
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def hardware_key(device: str) -> str:
    """``nvidia-h100-80gb-hbm3`` for a GPU run, ``cpu-<model>-<cores>c`` for a CPU run."""
    if device == "cuda":
        gpu = gpu_info()
        if gpu is not None:
            return _slug(gpu["name"])
    return f"cpu-{_slug(cpu_model())}-{cpu_cores()}c"


def machine_summary(device: str) -> dict[str, Any]:
    return {
        "hardware_key": hardware_key(device),
        "device": device,
        "cpu": cpu_model(),
        "cpu_id": cpu_family_model(),
        "cpu_isa": cpu_isa(),
        "cpu_cores": cpu_cores(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu_info() if device == "cuda" else None,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "software": software_versions(),
    }
