"""The decoder step as an ONNX graph, dynamic in batch and frames, cached on disk by model hash.

zvperf exports one :class:`DecoderStep` (W_x x + constant through the Zipformer stacks, the guidance
combine and the Euler update), not the whole model: the once-per-utterance work stays in torch.
The TorchScript-based exporter is used (``dynamo=False``): torch.export cannot prove the
downsampling stacks' length arithmetic for a symbolic frame count, while the tracer exports the
graph with the lengths computed from the input's shape, which a test checks at several lengths.

Two graphs per step kind: with a padding-mask input (for padded batches) and without one (no utterance
padded: the attention scores and convolution inputs are not masked at all). The exported softplus is
written out as where(y > 20, y, log(1 + exp(y))), as torch computes it, instead of ONNX's Softplus:
ONNX Runtime's CPU kernel for Softplus is not vectorised and took 38% of the fp32 step's kernel time
(85 of them over the feed-forward and convolution activations), against 1% for the Exp, Log and Where.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.onnx import symbolic_helper

from zvperf.engine.models import DecoderStep, ZipVoice
from zvperf.errors import ZvperfError
from zvperf.files import build_once, cache_dir, replacing

INPUT_NAMES = ("x", "constant", "padding_mask", "conditioning", "coefficients")
UNMASKED_INPUT_NAMES = tuple(name for name in INPUT_NAMES if name != "padding_mask")
OUTPUT_NAME = "x_next"
OPSET = 17
# Part of every cache key: bump it when the exported graph changes.
# 2: half-precision graphs keep softmax, softplus and normalisation statistics in fp32;
# 3: softplus as Exp, Log and Where, and a graph without the padding mask.
EXPORT_VERSION = 3


def exporter_missing(extra: str) -> str | None:
    """Why the decoder cannot be exported here (the onnx package is missing), or None."""
    if importlib.util.find_spec("onnx") is None:
        return f"onnx is not installed (pip install zvperf[{extra}])"
    return None


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


class UnmaskedStep(nn.Module):
    """A :class:`DecoderStep` for batches without padding: no mask input, so nothing in the graph is masked."""

    def __init__(self, step: DecoderStep) -> None:
        super().__init__()
        self.step = step

    def forward(self, x: Tensor, constant: Tensor, conditioning: Tensor, coefficients: Tensor) -> Tensor:
        return self.step(x, constant, None, conditioning, coefficients)


def _softplus_symbolic(g: Any, x: Any, beta: Any, threshold: Any) -> Any:
    """torch's softplus, x where beta x > threshold else log(1 + exp(beta x)) / beta, in fp32 whatever x's type."""
    beta = symbolic_helper._maybe_get_const(beta, "f")
    threshold = symbolic_helper._maybe_get_const(threshold, "f")

    def constant(value: float) -> Any:
        return g.op("Constant", value_t=torch.tensor(value, dtype=torch.float32))

    wide = x if x.type().scalarType() == "Float" else g.op("Cast", x, to_i=1)  # 1: ONNX's FLOAT
    scaled = wide if beta == 1 else g.op("Mul", wide, constant(beta))
    smooth = g.op("Log", g.op("Add", constant(1.0), g.op("Exp", scaled)))
    if beta != 1:
        smooth = g.op("Div", smooth, constant(beta))
    out = g.op("Where", g.op("Greater", scaled, constant(threshold)), wide, smooth)
    return out if wide is x else g.op("CastLike", out, x)


@contextlib.contextmanager
def _softplus_without_the_softplus_op() -> Iterator[None]:
    """While exporting (in this process), aten::softplus becomes Exp, Log and Where instead of ONNX's Softplus."""
    torch.onnx.register_custom_op_symbolic("aten::softplus", _softplus_symbolic, OPSET)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::softplus", OPSET)


def export_step(
    model: ZipVoice, guided: bool, path: Path, dtype: torch.dtype = torch.float32, masked: bool = True
) -> None:
    """Write the decoder step of ``model`` to ``path`` (written to a temporary file, then renamed); with
    ``masked`` False, the graph for unpadded batches, which has no padding_mask input."""
    decoder = copy.deepcopy(model.fm_decoder).to(device="cpu", dtype=dtype).eval()
    step = DecoderStep(decoder, model.feat_dim, guided)
    dynamic = {
        "x": {0: "batch", 1: "frames"},
        "constant": {0: "rows", 1: "frames"},
        "padding_mask": {0: "rows", 1: "frames"},
        OUTPUT_NAME: {0: "batch", 1: "frames"},
    }
    x, constant, mask, conditioning, coefficients = example_inputs(model, guided, dtype)
    module: nn.Module = step if masked else UnmaskedStep(step)
    args = (x, constant, mask, conditioning, coefficients) if masked else (x, constant, conditioning, coefficients)
    names = INPUT_NAMES if masked else UNMASKED_INPUT_NAMES
    try:
        with replacing(path) as temporary, torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on Python values it records as constants
            with _softplus_without_the_softplus_op():
                torch.onnx.export(
                    module,
                    args,
                    str(temporary),
                    dynamo=False,
                    opset_version=OPSET,
                    input_names=list(names),
                    output_names=[OUTPUT_NAME],
                    dynamic_axes={name: axes for name, axes in dynamic.items() if name in (*names, OUTPUT_NAME)},
                )
    except Exception as exc:  # noqa: BLE001 - any exporter failure becomes the backend's reason
        raise ZvperfError(f"exporting the decoder step to ONNX failed ({type(exc).__name__}: {exc}).") from None


def exported_step(model: ZipVoice, guided: bool, dtype: torch.dtype = torch.float32, masked: bool = True) -> Path:
    """The ONNX file of ``model``'s decoder step, exported on first use and then taken from the cache; with
    ``masked`` False, the graph for unpadded batches (no padding_mask input)."""
    kind = ("cfg" if guided else "single") + ("" if masked else "-unmasked")
    precision = {torch.float32: "fp32", torch.float16: "fp16"}[dtype]
    path = cache_dir() / "onnx" / f"{model.name}-{model_digest(model)}-{kind}-{precision}-opset{OPSET}.onnx"
    return build_once(path, lambda: export_step(model, guided, path, dtype, masked))
