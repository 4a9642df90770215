"""Choosing the device, and timing on it correctly."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

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
