"""What the official ZipVoice code needs around it on today's packages, applied around its calls and never by
editing the checkout; each fix has a name, and every result of an official row lists the ones applied.

- ``torchaudio-soundfile``: torchaudio 2.9+ loads and saves audio through torchcodec, which needs a system FFmpeg;
  where torchcodec cannot be imported, ``torchaudio.load``/``torchaudio.save`` read and write through soundfile
  (libsndfile, which zvperf installs) for the duration of the call.
- ``onnx-export-torchscript``: ``torch.onnx.export`` defaults to the dynamo exporter from torch 2.9, under which the
  official export's ``dynamic_axes`` fail; a call that does not choose an exporter gets the TorchScript one
  (``dynamo=False``), as on the torch the official code was written for.

This file imports nothing of zvperf: run as a script (``python official_fixes.py MODULE ARGS...``) it applies the
fixes and runs the official module as ``__main__``, so that a fresh official process (the cold start) runs no
zvperf code beyond these patches, and without importing the zvperf package.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import runpy
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

TORCHAUDIO_SOUNDFILE = "torchaudio-soundfile"
ONNX_EXPORT_TORCHSCRIPT = "onnx-export-torchscript"


def _torchcodec_usable() -> bool:
    if importlib.util.find_spec("torchcodec") is None:
        return False
    try:  # it imports but fails to load its FFmpeg libraries where there is no system FFmpeg
        importlib.import_module("torchcodec.decoders")
    except (ImportError, OSError, RuntimeError):
        return False
    return True


def needed() -> list[str]:
    """The fixes this environment needs, by name."""
    import torch

    fixes = [] if _torchcodec_usable() else [TORCHAUDIO_SOUNDFILE]
    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    if (major, minor) >= (2, 9):
        fixes.append(ONNX_EXPORT_TORCHSCRIPT)
    return fixes


def _soundfile_load(uri: Any, *args: Any, **kwargs: Any) -> tuple[Any, int]:
    """``torchaudio.load``'s result (channels x samples, float32) through soundfile; extra options unsupported."""
    import soundfile
    import torch

    if args or any(value is not None for value in kwargs.values()):
        raise TypeError(f"{TORCHAUDIO_SOUNDFILE}: torchaudio.load options {args or kwargs} are not supported")
    data, rate = soundfile.read(uri, dtype="float32", always_2d=True)
    return torch.from_numpy(data.T.copy()), rate


def _soundfile_save(uri: Any, src: Any, sample_rate: int, channels_first: bool = True, **_: Any) -> None:
    import soundfile

    data = src.detach().cpu().float().numpy()
    soundfile.write(uri, data.T if channels_first else data, sample_rate)


@contextlib.contextmanager
def _patched(owner: Any, name: str, replacement: Callable[..., Any]) -> Iterator[None]:
    original = getattr(owner, name)
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        setattr(owner, name, original)


@contextlib.contextmanager
def applied(fixes: list[str]) -> Iterator[None]:
    """The named fixes in place for the block."""
    with contextlib.ExitStack() as stack:
        if TORCHAUDIO_SOUNDFILE in fixes:
            import torchaudio

            stack.enter_context(_patched(torchaudio, "load", _soundfile_load))
            stack.enter_context(_patched(torchaudio, "save", _soundfile_save))
        if ONNX_EXPORT_TORCHSCRIPT in fixes:
            import torch.onnx

            exporter = torch.onnx.export

            def export(*args: Any, **kwargs: Any) -> Any:
                kwargs.setdefault("dynamo", False)
                return exporter(*args, **kwargs)

            stack.enter_context(_patched(torch.onnx, "export", export))
        yield


def main(argv: list[str]) -> None:
    """``MODULE ARGS...``: run the official module as ``__main__`` with the fixes this environment needs."""
    module, *args = argv
    sys.argv = [module, *args]
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        del sys.path[0]  # this folder's modules (ort, compiled, ...) must not shadow what the official code imports
    with applied(needed()):
        runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
