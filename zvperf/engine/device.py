"""Choosing the device, and timing on it correctly."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator
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
