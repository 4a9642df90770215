"""Ways to run the flow-matching decoder, behind one protocol.

A backend turns a loaded model into a :class:`Solver` for one device and precision: a callable
with the signature of :meth:`ZipVoice.solve`. Adding a backend is one module here that defines a
class following :class:`Backend` and lists it in ``_MODULES``; the benchmark matrix then picks it
up by name (``--zv-backends torch,...``).
"""

from __future__ import annotations

import importlib
from typing import Protocol

import torch

from zvperf.engine.models import ZipVoice
from zvperf.errors import ZvperfError


class Solver(Protocol):
    def __call__(
        self,
        x0: torch.Tensor,
        text_condition: torch.Tensor,
        speech_condition: torch.Tensor,
        padding_mask: torch.Tensor,
        num_step: int,
        guidance_scale: float,
        t_shift: float = 0.5,
    ) -> torch.Tensor: ...


class Backend(Protocol):
    name: str
    precisions: tuple[str, ...]  # the precisions it can run
    devices: tuple[str, ...]  # "cpu", "cuda"

    def unavailable(self, device: str, precision: str) -> str | None:
        """Why this backend cannot run here (a missing package, no CUDA, ...), or None when it can."""

    def prepare(self, model: ZipVoice, device: str, precision: str) -> Solver:
        """Build what the backend needs (export, compile, engine build): the one-time cost, outside timing."""


class BackendUnavailable(ZvperfError):
    """A backend cannot run on this machine; benchmarks skip with this reason."""


# name -> module defining ``BACKEND``; imported lazily so that optional packages stay optional.
_MODULES = {
    "torch": "zvperf.backends.torch_eager",
}


def backend_names() -> list[str]:
    return list(_MODULES)


def get_backend(name: str) -> Backend:
    if name not in _MODULES:
        raise ZvperfError(f"backend {name!r} is not one of {', '.join(_MODULES)}.")
    return importlib.import_module(_MODULES[name]).BACKEND


def check_runnable(backend: Backend, device: str, precision: str) -> None:
    """Raise :class:`BackendUnavailable` with the reason when ``backend`` cannot run here."""
    if device not in backend.devices:
        raise BackendUnavailable(f"backend {backend.name} does not run on {device}")
    if precision not in backend.precisions:
        raise BackendUnavailable(f"backend {backend.name} has no {precision} mode")
    if device == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable("no CUDA device is available")
    reason = backend.unavailable(device, precision)
    if reason:
        raise BackendUnavailable(reason)
