"""The user's files: reading them with one clear sentence for each way it can go wrong, replacing them
atomically, so that a reader (or a crash) never sees half a file, and locking them against a second writer."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import filelock

from zvperf.errors import ZvperfError

LOCK_TIMEOUT_S = 60
# A build (ONNX export, TensorRT engine) can take many minutes; a lock held longer than this is a stuck process.
BUILD_LOCK_TIMEOUT_S = 3600


def read_text(path: Path | str, label: str | None = None) -> str:
    """The UTF-8 text of ``path``, byte for byte (line endings kept); a missing or unreadable file is a
    ZvperfError starting with ``label`` (default: the path)."""
    label = label or str(path)
    try:
        return Path(path).read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ZvperfError(f"{label}: file not found.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ZvperfError(f"{label}: cannot be read as UTF-8 text ({exc}).") from None


def read_json(path: Path | str) -> Any:
    """The parsed JSON of ``path``; a missing, unreadable or malformed file is a ZvperfError naming it."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ZvperfError(f"{path}: not valid JSON ({exc}).") from None


def cache_dir() -> Path:
    """Where what zvperf builds once per machine is kept (exported graphs, engines, compiled kernels):
    $ZVPERF_CACHE, else ~/.cache/zvperf."""
    root = os.environ.get("ZVPERF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "zvperf")
    return Path(root)


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write the new file to; on leaving the block without an error it
    replaces ``path`` in one rename, otherwise it is deleted and ``path`` is left as it was.

    The temporary name is unique per call (``mkstemp``), so processes writing the same target at once
    (benchmark shards exporting one graph, say) never write into each other's file: the last rename wins
    and every reader sees a whole file. The new file keeps the mode of the one it replaces (else 0644).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_atomic(path: Path, content: str | bytes) -> None:
    """Replace ``path`` with ``content`` (text is written as UTF-8), flushed to disk before the rename."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    with replacing(path) as temporary, open(temporary, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@contextmanager
def locked(path: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold ``<path>.lock`` for a read-modify-replace of ``path``: re-read it inside the block, then replace it with
    :func:`write_atomic`, and two processes updating it at once both land. The lock is the OS's (filelock), so a
    process that dies releases it; one still held after ``timeout_s`` is an error naming ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(f"{path}.lock", timeout=timeout_s)
    try:
        with lock:
            yield
    except filelock.Timeout:
        raise ZvperfError(f"could not lock {path} within {timeout_s:g} s: is another update stuck?") from None


def build_once(path: Path, build: Callable[[], None]) -> Path:
    """``path``, made by ``build()`` unless it exists: under ``<path>.lock``, so that processes needing the same
    file (benchmark shards exporting one graph, say) build it once while the others wait for it and take it.
    ``build`` writes through :func:`replacing`, so a crash leaves no half file under the final name."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with locked(path, BUILD_LOCK_TIMEOUT_S):
            if not path.is_file():
                build()
    return path
