"""Choosing the device, and timing on it correctly."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from zvperf.errors import ZvperfError


def resolve_device(name: str) -> str:
    """'auto' picks CUDA when present; asking for CUDA where there is none is an error, not a fallback."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ZvperfError(
            "--device cuda was requested but no CUDA device is available (torch.cuda.is_available() is False)."
        )
    if name not in ("cpu", "cuda"):
        raise ZvperfError(f"device {name!r} is not one of auto, cpu, cuda.")
    return name


# The instruction-set flags (as torch.cpu.get_capabilities names them) that give torch's CPU matrix products native
# kernels in a half precision: oneDNN's bf16 and fp16 paths. Without one, torch still computes, but through
# converting fallbacks: fp16 ran at a fifth of fp32's rate on an AVX-512 CPU without avx512_fp16 (Zen 5, 23 vs 105
# GFLOP/s per thread at the decoder's feed-forward shape), while bf16 with avx512_bf16 ran at 4.5x fp32's.
NATIVE_HALF_FLAGS: dict[str, dict[str, tuple[str, ...]]] = {
    "bf16": {"x86_64": ("avx512_bf16", "amx_bf16"), "aarch64": ("bf16",)},
    "fp16": {"x86_64": ("avx512_fp16", "amx_fp16"), "aarch64": ("fp16_arith",)},
}
# Integer dot-product instructions that add u8 x s8 products without saturating (see cpu_int8_saturates).
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_capabilities() -> Mapping[str, Any]:
    """The CPU's instruction-set flags and architecture, as torch detects them (cpuinfo)."""
    return torch.cpu.get_capabilities()


def cpu_half_missing(precision: str) -> str | None:
    """Why torch cannot run ``precision`` natively on this CPU (naming the flags it lacks), or None."""
    by_architecture = NATIVE_HALF_FLAGS.get(precision)
    if by_architecture is None:
        return None
    capabilities = cpu_capabilities()
    architecture = str(capabilities.get("architecture", "unknown"))
    flags = by_architecture.get(architecture)
    if flags is None:
        return f"no native {precision} matrix products are known for {architecture} CPUs"
    if any(capabilities.get(flag) for flag in flags):
        return None
    return (
        f"this CPU lacks {' and '.join(flags)}: torch's {precision} matrix products would run through converting "
        f"fallbacks, slower than fp32"
    )


def cpu_int8_saturates() -> bool:
    """Whether int8 products of u8 activations and s8 weights saturate on this CPU: an x86 CPU without VNNI adds
    pairs of them into 16-bit integers (vpmaddubsw), which overflow unless the weights use 7 bits."""
    capabilities = cpu_capabilities()
    return capabilities.get("architecture") == "x86_64" and not any(capabilities.get(f) for f in VNNI_FLAGS)


def synchronize(device: str | torch.device) -> None:
    """Wait for queued GPU work, so that a host clock read afterwards measures compute, not launches."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@functools.cache
def _stream_of_gpu(index: int) -> torch.cuda.Stream:
    return torch.cuda.Stream(device=index)


def engine_stream(device: str | torch.device) -> torch.cuda.Stream:
    """The stream all of the engine's GPU work runs on: one non-default CUDA stream per GPU for the process.

    Its handle is what ONNX Runtime (``user_compute_stream``) and TensorRT (``execute_async_v3``) get, so
    their kernels queue behind torch's on the same stream with no host wait. The legacy default stream
    would not do: ONNX Runtime reads handle 0 as "no stream given" and makes one of its own, and TensorRT
    adds a device synchronisation to every call on it.
    """
    index = torch.device(device).index
    return _stream_of_gpu(torch.cuda.current_device() if index is None else index)


@contextlib.contextmanager
def on_engine_stream(device: str | torch.device) -> Iterator[None]:
    """The block's CUDA work on the engine stream, after what the current stream queued before it and before
    what that stream queues after it (stream waits, not host waits). Nothing to do on the CPU, or when the
    engine stream is current already (so nesting costs nothing)."""
    if torch.device(device).type != "cuda":
        yield
        return
    stream = engine_stream(device)
    previous = torch.cuda.current_stream(stream.device)
    if previous == stream:
        yield
        return
    stream.wait_stream(previous)
    try:
        with torch.cuda.stream(stream):
            yield
    finally:
        previous.wait_stream(stream)


def stream_handle(stream: Any) -> int:
    """The ``cudaStream_t`` of a torch stream as an integer, refusing the legacy default stream (0)."""
    handle = int(stream.cuda_stream)
    if handle == 0:
        raise ZvperfError(
            "the engine's GPU work must run on its own CUDA stream, not the legacy default stream (handle 0), "
            "which ONNX Runtime ignores and TensorRT synchronises on."
        )
    return handle


def to_device(tensor: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """A host tensor on ``device`` without making the host wait: to CUDA through pinned memory and an
    asynchronous copy (a copy from pageable memory would wait for the stream)."""
    if torch.device(device).type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


class StageClock:
    """Wall time per named stage; on CUDA each stage ends with a device synchronisation, so a stage is
    charged for the GPU work it queued rather than for launching it."""

    def __init__(self, device: str | torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
