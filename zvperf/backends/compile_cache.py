"""What torch.compile builds for the decoder step, kept on disk so that a machine pays for it once.

Every process re-traces the step with dynamo, but the costly part of a compile (Inductor's code generation and the
C++ or Triton builds behind it) can be saved as one blob (``torch.compiler.save_cache_artifacts``) and loaded into
a new process's compile caches before it compiles (``load_cache_artifacts``): torch's own portable cache, used
as is. zvperf keeps one blob per key under its cache folder (zvperf.files.cache_dir), the key naming everything
that makes the generated code differ: torch and Triton, the device's architecture, the model's configuration and
precision, and zvperf's model code. Inductor checks each entry against the graph it is asked for anyway; the key
keeps blobs of other machines, versions and code from piling into one file and being loaded for nothing.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
from pathlib import Path

import torch

import zvperf.engine
from zvperf.engine.device import cpu_capabilities
from zvperf.engine.models import ZipVoice
from zvperf.files import cache_dir, write_atomic

# The code the compiled graph is traced from: the engine's modules and the compile backend's own.
_TRACED_CODE = (*sorted(Path(zvperf.engine.__file__).parent.glob("*.py")), Path(__file__).with_name("compiled.py"))


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def device_architecture(device: str) -> str:
    """What the generated kernels are specific to: the GPU's model and compute capability, or the CPU's
    architecture and instruction-set flags (Inductor's C++ code is vectorised for the ISA it detects)."""
    if device == "cuda":
        major, minor = torch.cuda.get_device_capability()
        return f"{torch.cuda.get_device_name()} sm{major}{minor}"
    capabilities = cpu_capabilities()
    flags = sorted(name for name, value in capabilities.items() if value is True)
    return f"{capabilities.get('architecture', platform.machine())} {' '.join(flags)}"


def cache_file(model: ZipVoice, device: str, precision: str) -> Path:
    """The blob for this model, device and precision: ``compile/<model>-<precision>-<key>.bin``."""
    hasher = hashlib.sha256()
    for part in (
        f"torch {torch.__version__}",
        f"triton {_version('triton')}",
        f"python {platform.python_version()}",
        device_architecture(device),
        repr(model.config),
    ):
        hasher.update(part.encode() + b"\0")
    for path in _TRACED_CODE:
        hasher.update(path.read_bytes())
    return cache_dir() / "compile" / f"{model.name}-{precision}-{hasher.hexdigest()[:16]}.bin"


def load(path: Path) -> bool:
    """Load the kept blob into this process's compile caches; whether there was one that torch took."""
    if not path.is_file():
        return False
    return torch.compiler.load_cache_artifacts(path.read_bytes()) is not None


def save(path: Path) -> None:
    """Keep what this process has compiled (and loaded) so far, replacing the blob in one rename."""
    saved = torch.compiler.save_cache_artifacts()
    if saved is not None:
        write_atomic(path, saved[0])
