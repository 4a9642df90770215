"""The ZipVoice checkout under test: the user's clone of k2-fsa/ZipVoice (or of a fork), named with
``--zv-zipvoice=PATH`` or ``ZVPERF_ZIPVOICE``, else the ``zipvoice`` package already importable (a clone on
PYTHONPATH). Its identity (path, commit, uncommitted changes) and the versions of what its code imports go with
every result of its rows, and keys every cache built from it (exported graphs, engines).

The checkout is imported, never installed or edited: its folder goes first on ``sys.path`` here and on
PYTHONPATH for the processes this one starts, and an import that fails is one sentence naming the checkout.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import importlib.util
import logging
import os
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from zvperf.backends import official_fixes
from zvperf.errors import ZvperfError

ENV = "ZVPERF_ZIPVOICE"
HOW_TO_GET = (
    "clone https://github.com/k2-fsa/ZipVoice and name the clone with --zv-zipvoice=PATH (or ZVPERF_ZIPVOICE); "
    "pip install -e '.[zipvoice]' installs what its code imports"
)
# A file every ZipVoice checkout has: what tells one from any other folder.
MARKER = Path("zipvoice") / "models" / "zipvoice.py"
# What the official inference code imports that decides its speed or its numerics.
VERSIONED = ("torch", "torchaudio", "vocos", "lhotse", "numpy", "onnxruntime", "onnxruntime-gpu", "tensorrt-cu13")


class CheckoutError(ZvperfError):
    """The checkout under test cannot run (its import fails, it cannot load the model folder): its rows fail, never
    skip, so that a commit that breaks them cannot pass a gate unnoticed."""


def _git(path: Path, *args: str) -> str | None:
    try:
        completed = subprocess.run(
            ["git", "-C", str(path), *args], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return completed.stdout.strip() if completed.returncode == 0 else None


@dataclasses.dataclass(frozen=True)
class Checkout:
    path: Path
    commit: str | None  # None: not a git repository (a copy, an unpacked archive)
    dirty: bool | None  # uncommitted changes under zipvoice/ (the code that runs), None without git

    @property
    def label(self) -> str:
        """``2f7326fbfe99``, ``2f7326fbfe99+dirty``, or ``not a git checkout``."""
        if self.commit is None:
            return "not a git checkout"
        return self.commit[:12] + ("+dirty" if self.dirty else "")

    @property
    def cache_key(self) -> str:
        """What a cache built from this code is keyed by: the commit, and for uncommitted changes the diff's hash."""
        if self.commit is None:
            return "nogit-" + _tree_digest(self.path)
        if not self.dirty:
            return self.commit[:12]
        return f"{self.commit[:12]}-dirty-{_tree_digest(self.path)}"

    def facts(self) -> dict[str, Any]:
        """What every result of this checkout's rows records."""
        return {
            "path": str(self.path),
            "commit": self.commit,
            "dirty": self.dirty,
            "label": self.label,
            "versions": versions(),
            "k2": importlib.util.find_spec("k2") is not None,
            "fixes": official_fixes.needed(),
        }


def _tree_digest(path: Path) -> str:
    """A short hash of the checkout's Python files (their paths and bytes): what an uncommitted change changes."""
    import hashlib

    digest = hashlib.sha256()
    for file in sorted((path / "zipvoice").rglob("*.py")):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


@cache
def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in VERSIONED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def open_checkout(path: Path | str) -> Checkout:
    """The checkout at ``path``; a folder that is none is one sentence saying so."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise ZvperfError(f"ZipVoice checkout {path}: no such folder.")
    if not (root / MARKER).is_file():
        raise ZvperfError(f"{path} is not a ZipVoice checkout: it has no {MARKER}.")
    toplevel = _git(root, "rev-parse", "--show-toplevel")
    if toplevel is None or Path(toplevel).resolve() != root:
        return Checkout(root, None, None)  # not a repository, or a folder inside another project's repository
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--", "zipvoice")
    return Checkout(root, commit, bool(status) if commit is not None else None)


def selected(path: Path | str | None = None) -> Checkout | None:
    """The checkout named by ``path``, else by ZVPERF_ZIPVOICE, else the folder the importable ``zipvoice`` package
    lies in (a clone on PYTHONPATH); None when there is none."""
    named = path or os.environ.get(ENV)
    if named:
        return open_checkout(named)
    try:
        spec = importlib.util.find_spec("zipvoice")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        root = Path(location).resolve().parent
        if (root / MARKER).is_file():
            return open_checkout(root)
    return None  # the empty `zipvoice` wheel of the package index


def activate(checkout: Checkout) -> None:
    """Make ``import zipvoice`` import this checkout, in this process and in the ones it starts."""
    loaded = sys.modules.get("zipvoice")
    if loaded is not None and loaded.__file__ and not Path(loaded.__file__).resolve().is_relative_to(checkout.path):
        raise ZvperfError(
            f"the zipvoice package was already imported from {Path(loaded.__file__).parent.parent} in this process: "
            f"it cannot also run the checkout {checkout.path}."
        )
    if not sys.path or sys.path[0] != str(checkout.path):
        sys.path.insert(0, str(checkout.path))
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if paths[0] != str(checkout.path):
        os.environ["PYTHONPATH"] = os.pathsep.join([str(checkout.path), *filter(None, paths)])
    os.environ[ENV] = str(checkout.path)
    importlib.invalidate_caches()


def import_official(checkout: Checkout, module_name: str) -> ModuleType:
    """``module_name`` of the checkout; an import that fails (a missing package, a broken commit) is one sentence
    naming the checkout and what failed."""
    activate(checkout)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its scaling module warns at import that the optional k2 kernels are absent
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise CheckoutError(
            f"importing {module_name} from the ZipVoice checkout {checkout.path} failed: no module named "
            f"{exc.name!r} (pip install -e '.[zipvoice]' installs what the official code imports)."
        ) from None
    except Exception as exc:  # noqa: BLE001 - whatever the checkout's code raises on import is the reason
        raise CheckoutError(
            f"importing {module_name} from the ZipVoice checkout {checkout.path} failed ({type(exc).__name__}: {exc})."
        ) from None
    finally:
        root.setLevel(level)
