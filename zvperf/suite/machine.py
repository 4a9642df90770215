"""What machine and software a result was measured on, and the hardware key baselines are filed under.

Only stable facts go here (names, versions, core counts, CPU flags); clocks and temperatures change from
run to run and would make every comparison warn, so they live in the per-benchmark telemetry instead.

A CPU's key names what makes its timings differ: the vendor and model name, the family and model numbers
where the name is generic (a KVM guest reports only "AMD EPYC" for a Zen 3 and a Zen 5 alike), the widest
vector ISA torch can use (avx2, avx512, avx512-bf16, amx; neon, sve, sve2 on ARM) and the core count:
``cpu-amd-epyc-f25m1-avx2-2c``. The ISA-related flags are recorded too, so that the gate can warn when a
key matches but the flags do not (a hypervisor that hides AVX-512 on one host and not another).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import platform
import re
from pathlib import Path
from typing import Any

import torch

from zvperf import __version__


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


CPUINFO = Path("/proc/cpuinfo")
# The widest level whose flags are all present, as /proc/cpuinfo names them. torch dispatches AVX2 kernels on
# avx2 + fma and AVX512 ones on avx512f/bw/vl/dq; bf16 and AMX add the kernels of oneDNN's bf16 paths.
_AVX512 = frozenset({"avx512f", "avx512bw", "avx512vl", "avx512dq"})
ISA_LEVELS = (
    ("amx", _AVX512 | {"avx512_bf16", "amx_tile", "amx_bf16"}),
    ("avx512-bf16", _AVX512 | {"avx512_bf16"}),
    ("avx512", _AVX512),
    ("avx2", frozenset({"avx2", "fma"})),
    ("sve2", frozenset({"sve2"})),
    ("sve", frozenset({"sve"})),
    ("neon", frozenset({"asimd"})),
)
# The flags worth warning about when they differ under one key: vector and matrix extensions (not the
# hypervisor's or the kernel's bookkeeping flags, which change with a kernel upgrade).
_ISA_FLAG = re.compile(r"^(avx|amx|fma|f16c|sse|ssse3|gfni|vaes|vpclmulqdq|asimd|sve|sme(?!p)|bf16|i8mm|fp16)")
_VENDORS = {"AuthenticAMD": "amd", "GenuineIntel": "intel", "HygonGenuine": "hygon", "0x41": "arm", "0xc0": "ampere"}


@dataclasses.dataclass(frozen=True)
class CpuIdentity:
    """What a CPU is, from /proc/cpuinfo (first processor) or, elsewhere, py-cpuinfo."""

    name: str  # the model name ("AMD EPYC", "Intel(R) Xeon(R) Platinum 8480+")
    vendor: str  # short: amd, intel, arm, ... ("" when unknown)
    family: str | None  # x86 family and model numbers, decimal
    model: str | None
    flags: frozenset[str]
    cores: int

    @property
    def isa(self) -> str:
        return next((level for level, needed in ISA_LEVELS if needed <= self.flags), "baseline")

    @property
    def isa_flags(self) -> list[str]:
        return sorted(f for f in self.flags if _ISA_FLAG.match(f))

    @property
    def key(self) -> str:
        name = _slug(self.name) or _slug(platform.machine())
        parts = ["cpu"] + ([self.vendor] if self.vendor and not name.startswith(self.vendor) else []) + [name]
        if not re.search(r"\d", name) and self.family is not None:  # a generic name: the numbers tell them apart
            parts.append(f"f{self.family}m{self.model}")
        return "-".join([*parts, self.isa, f"{self.cores}c"])


def parse_cpuinfo(text: str, cores: int) -> CpuIdentity:
    """The identity in /proc/cpuinfo's text (its first processor: they are alike)."""
    fields: dict[str, str] = {}
    for line in text.split("\n\n")[0].splitlines():
        name, _, value = line.partition(":")
        fields.setdefault(name.strip(), value.strip())
    vendor = fields.get("vendor_id") or fields.get("CPU implementer", "")
    return CpuIdentity(
        name=fields.get("model name", ""),
        vendor=_VENDORS.get(vendor, vendor.lower()),
        family=fields.get("cpu family"),
        model=fields.get("model"),
        flags=frozenset((fields.get("flags") or fields.get("Features", "")).split()),
        cores=cores,
    )


def cpu_identity() -> CpuIdentity:
    try:
        return parse_cpuinfo(CPUINFO.read_text(encoding="utf-8"), cpu_cores())
    except OSError:  # not Linux: py-cpuinfo (pytest-benchmark's own source of CPU facts) asks the CPU itself
        import cpuinfo

        info = cpuinfo.get_cpu_info()
        vendor = str(info.get("vendor_id_raw", ""))
        family, model = info.get("family"), info.get("model")
        return CpuIdentity(
            name=str(info.get("brand_raw") or platform.processor() or platform.machine()),
            vendor=_VENDORS.get(vendor, vendor.lower()),
            family=None if family is None else str(family),
            model=None if model is None else str(model),
            flags=frozenset(info.get("flags", [])),
            cores=cpu_cores(),
        )


def cpu_model() -> str:
    return cpu_identity().name or platform.processor() or platform.machine()


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


# The key of a run for CUDA where there is no CUDA device: every benchmark skipped, and no baseline of this
# machine's CPU may be judged against it (its CPU rows would all read as missing).
NO_GPU_KEY = "cuda-unavailable"


def hardware_key(device: str) -> str:
    """``nvidia-h100-80gb-hbm3`` for a GPU run, ``cpu-<vendor and model>[-f<family>m<model>]-<isa>-<cores>c``
    (CpuIdentity.key) for a CPU run, ``NO_GPU_KEY`` for a CUDA run without a GPU."""
    if device == "cuda":
        gpu = gpu_info()
        return _slug(gpu["name"]) if gpu is not None else NO_GPU_KEY
    return cpu_identity().key


def machine_summary(device: str) -> dict[str, Any]:
    cpu = cpu_identity()
    return {
        "hardware_key": hardware_key(device),
        "device": device,
        "cpu": cpu_model(),
        "cpu_cores": cpu.cores,
        "cpu_family": cpu.family,
        "cpu_model_number": cpu.model,
        "cpu_isa": cpu.isa,
        "cpu_flags": cpu.isa_flags,
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu_info() if device == "cuda" else None,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "software": software_versions(),
    }
