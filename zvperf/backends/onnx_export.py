"""The decoder step as an ONNX graph, dynamic in batch and frames, cached on disk by model hash.

zvperf exports one :class:`DecoderStep` (W_x x + constant through the Zipformer stacks, the guidance
combine and the Euler update), not the whole model: the once-per-utterance work stays in torch.
The TorchScript-based exporter is used (``dynamo=False``): torch.export cannot prove the
downsampling stacks' length arithmetic for a symbolic frame count, while the tracer exports the
graph with the lengths computed from the input's shape, which a test checks at several lengths.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import os
import warnings
from pathlib import Path

import torch

from zvperf.engine.models import DecoderStep, ZipVoice
from zvperf.errors import ZvperfError
from zvperf.files import build_once, replacing

INPUT_NAMES = ("x", "constant", "padding_mask", "conditioning", "coefficients")
OUTPUT_NAME = "x_next"
OPSET = 17
# Part of every cache key: bump it when the exported graph changes.
EXPORT_VERSION = 2  # 2: half-precision graphs keep softmax, softplus and normalisation statistics in fp32


def exporter_missing(extra: str) -> str | None:
    """Why the decoder cannot be exported here (the onnx package is missing), or None."""
    if importlib.util.find_spec("onnx") is None:
        return f"onnx is not installed (pip install zvperf[{extra}])"
    return None


def cache_dir() -> Path:
    """Where exported graphs and built engines are kept: $ZVPERF_CACHE, else ~/.cache/zvperf."""
    root = os.environ.get("ZVPERF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "zvperf")
    return Path(root)


def model_digest(model: ZipVoice) -> str:
    """A short hash of the decoder's architecture and weights (what an exported graph depends on)."""
    hasher = hashlib.sha256(f"{type(model).__name__}:{model.config}:v{EXPORT_VERSION}".encode())
    for name, tensor in sorted(model.fm_decoder.state_dict().items()):
        hasher.update(name.encode())
        hasher.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return hasher.hexdigest()[:16]


def example_inputs(model: ZipVoice, guided: bool, dtype: torch.dtype, batch: int = 2, frames: int = 203):
    """Inputs of the traced call. Sizes above 1 (and a frame count that no downsampling factor divides)
    keep the tracer from treating any dimension as a constant."""
    config = model.config
    rows = 2 * batch if guided else batch
    mask = torch.zeros(rows, frames, dtype=torch.bool)
    mask[-1, frames - 5 :] = True
    return (
        torch.randn(batch, frames, model.feat_dim, dtype=dtype),
        torch.randn(rows, frames, config.fm_decoder_dim, dtype=dtype),
        mask,
        torch.randn(1, config.time_embed_dim, dtype=dtype),
        torch.tensor([0.25, -0.1], dtype=torch.float32),
    )


def export_step(model: ZipVoice, guided: bool, path: Path, dtype: torch.dtype = torch.float32) -> None:
    """Write the decoder step of ``model`` to ``path`` (written to a temporary file, then renamed)."""
    decoder = copy.deepcopy(model.fm_decoder).to(device="cpu", dtype=dtype).eval()
    step = DecoderStep(decoder, model.feat_dim, guided)
    dynamic = {
        "x": {0: "batch", 1: "frames"},
        "constant": {0: "rows", 1: "frames"},
        "padding_mask": {0: "rows", 1: "frames"},
        OUTPUT_NAME: {0: "batch", 1: "frames"},
    }
    try:
        with replacing(path) as temporary, torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on Python values it records as constants
            torch.onnx.export(
                step,
                example_inputs(model, guided, dtype),
                str(temporary),
                dynamo=False,
                opset_version=OPSET,
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                dynamic_axes=dynamic,
            )
    except Exception as exc:  # noqa: BLE001 - any exporter failure becomes the backend's reason
        raise ZvperfError(f"exporting the decoder step to ONNX failed ({type(exc).__name__}: {exc}).") from None


def exported_step(model: ZipVoice, guided: bool, dtype: torch.dtype = torch.float32) -> Path:
    """The ONNX file of ``model``'s decoder step, exported on first use and then taken from the cache."""
    kind = "cfg" if guided else "single"
    precision = {torch.float32: "fp32", torch.float16: "fp16"}[dtype]
    path = cache_dir() / "onnx" / f"{model.name}-{model_digest(model)}-{kind}-{precision}-opset{OPSET}.onnx"
    return build_once(path, lambda: export_step(model, guided, path, dtype))
