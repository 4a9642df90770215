"""Ways to run the flow-matching decoder, behind one protocol.

A backend turns a loaded model into a :class:`Solver` for one device and precision: a callable
with the signature of :meth:`ZipVoice.solve`. Adding a backend is one module here that defines a
class following :class:`Backend` and lists its instances in ``BACKENDS``; the registry finds it
and the benchmark matrix picks it up by name (``--zv-backends torch,ort-cpu,...``). Optional
packages (onnxruntime, tensorrt) are imported only when a backend is prepared.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from typing import Any, Protocol, runtime_checkable

import torch

from zvperf.engine.models import ZipVoice
from zvperf.engine.solver import Solver
from zvperf.errors import ZvperfError


class Backend(Protocol):
    name: str
    precisions: tuple[str, ...]  # the precisions it can run
    devices: tuple[str, ...]  # "cpu", "cuda"
    # Optional: True when it allocates device memory outside torch (see own_allocator), and when what it builds is
    # kept for the next process (see keeps_build).

    def unavailable(self, device: str, precision: str) -> str | None:
        """Why this backend cannot run here (a missing package, no CUDA, ...), or None when it can."""

    def prepare(self, model: ZipVoice, device: str, precision: str) -> Solver:
        """Build what the backend needs (export, compile, engine build): the one-time cost, outside timing."""


@runtime_checkable
class CheckoutBackend(Backend, Protocol):
    """A backend whose rows run the ZipVoice checkout under test (``zvperf.backends.checkout``): besides a solver it
    loads a model folder through the checkout's own code, and the benchmarks time the checkout's functions."""

    runs_checkout: bool

    def load(self, model_name: str, weights: str, device: str, precision: str) -> Any:
        """The checkout's objects for ``weights`` (an ``OfficialRun``), built outside timing."""


def own_allocator(backend: Backend) -> bool:
    """Whether the backend allocates device memory outside torch (ONNX Runtime, TensorRT), so that torch's
    memory statistics miss it; a backend says so with an ``own_allocator`` attribute (default: no)."""
    return bool(getattr(backend, "own_allocator", False))


def keeps_build(backend: Backend) -> bool:
    """Whether what ``prepare`` builds (an exported graph, an engine, compiled kernels) is kept in zvperf's cache for
    the next process, so that a second start on a machine costs less than the first; a backend says so with a
    ``keeps_build`` attribute (default: no)."""
    return bool(getattr(backend, "keeps_build", False))


class BackendUnavailable(ZvperfError):
    """A backend cannot run on this machine; benchmarks skip with this reason."""


@functools.lru_cache(maxsize=1)
def _registry() -> dict[str, Backend]:
    """Every backend defined in this package: each module lists its own in ``BACKENDS``."""
    found: dict[str, Backend] = {}
    for module_info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        for backend in getattr(module, "BACKENDS", ()):
            found[backend.name] = backend
    return found


def backend_names() -> list[str]:
    """All backends, the reference (torch eager) first."""
    return sorted(_registry(), key=lambda name: (name != "torch", name))


def get_backend(name: str) -> Backend:
    registry = _registry()
    if name not in registry:
        raise ZvperfError(f"backend {name!r} is not one of {', '.join(registry)}.")
    return registry[name]


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
