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
        # The gpu extra installs tensorrt-cu13 without the tensorrt meta-package.
        "tensorrt": _package_version("tensorrt")
        or _package_version("tensorrt-cu13")
        or _package_version("tensorrt-cu12"),
        "onnxruntime": _package_version("onnxruntime-gpu") or _package_version("onnxruntime"),
        "vocos": _package_version("vocos"),
    }


def onnxruntime_providers() -> dict[str, list[str]]:
    """The execution providers each ONNX Runtime backend really ran on in this process ("ort-trt fp16" ->
    providers in priority order), read from the sessions themselves."""
    from zvperf.backends.ort import providers_used

    return providers_used()


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
        "cpu_cores": cpu_cores(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu_info() if device == "cuda" else None,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "software": software_versions(),
    }
