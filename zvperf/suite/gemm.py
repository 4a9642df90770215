"""The machine's attainable matrix-multiply rate at the decoder's shapes, per precision: what every solver row's
FLOP rate is set against.

Measured once per run and precision, outside any timed region: every distinct linear-layer shape of one decoder
evaluation at ``ATTAINABLE_FRAMES`` frames (zvperf.engine.flops.decoder_linears; about 90% of the decoder's FLOPs)
is timed through each matrix-multiply implementation the suite's backends use on that device, and the rate of
the best one is the attainable rate: the FLOPs of all those products (each shape as often as the decoder runs
it) over their summed best times. "Attainable" is the best of the implementations, not the first one to hand:
on an AMD CPU torch's fp32 default (MKL) reaches less than half of what oneDNN and ONNX Runtime's MLAS do, so
torch alone would understate the machine's limit by half.

Implementations, by device and precision (each where it runs; one that fails is recorded with its reason):

* CPU fp32: ``torch`` (F.linear: MKL), ``onednn`` (oneDNN on packed weights, the torch backend's fp32 path),
  ``onnxruntime`` (ONNX Runtime's MatMul, the ort-cpu backend's);
* CPU bf16, fp16: ``torch`` (F.linear: oneDNN) and ``onednn`` (packed weights);
* CPU int8: ``onnxruntime-int8`` (the ort-int8 backend's dynamically quantised MatMul: a rate of int8 operations);
* CUDA fp32 (TF32 off, as the fp32 rows run), fp16, bf16: ``torch`` (F.linear: cuBLAS).
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from zvperf.engine.config import ModelConfig
from zvperf.engine.device import cpu_int8_saturates, synchronize
from zvperf.engine.flops import Linear, decoder_linears
from zvperf.engine.onednn import OneDnnLinears, onednn_available
from zvperf.engine.precision import DTYPES

ATTAINABLE_FRAMES = 1800  # the decoder length the shapes are taken at (batch 1)
REPEATS = 3  # timed calls per shape after one warm-up; the fastest counts (the machine's limit, not its noise)

# A method makes, for one product shape, a zero-argument call that computes it.
Method = Callable[[Linear], Callable[[], Any]]


def _operands(shape: Linear, dtype: torch.dtype, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, shape.rows, shape.inputs, generator=generator).to(device=device, dtype=dtype)
    weight = (torch.randn(shape.outputs, shape.inputs, generator=generator) * shape.inputs**-0.5).to(device, dtype)
    return x, weight


def _torch_method(dtype: torch.dtype, device: str) -> Method:
    def make(shape: Linear) -> Callable[[], Any]:
        x, weight = _operands(shape, dtype, device)
        return lambda: F.linear(x, weight)

    return make


def _onednn_method(dtype: torch.dtype) -> Method:
    def make(shape: Linear) -> Callable[[], Any]:
        x, weight = _operands(shape, dtype, "cpu")
        packed = OneDnnLinears().pack(weight)
        return lambda: torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")

    return make


def _onnxruntime_method(int8: bool) -> Method:
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    from zvperf.backends.ort import quantize_weight_products

    def make(shape: Linear) -> Callable[[], Any]:
        x, weight = _operands(shape, torch.float32, "cpu")
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "weight"], ["y"])],
            "linear",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, shape.rows, shape.outputs])],
            [numpy_helper.from_array(weight.t().contiguous().numpy(), "weight")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        if int8:
            with tempfile.TemporaryDirectory() as folder:
                target = Path(folder) / "int8.onnx"
                quantize_weight_products(model, target, cpu_int8_saturates())
                source: Any = target.read_bytes()
        else:
            source = model.SerializeToString()
        session = onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        feed = {"x": np.ascontiguousarray(x.numpy())}
        return lambda: session.run(None, feed)

    return make


def methods(device: str, precision: str) -> dict[str, Method]:
    """The matrix-multiply implementations the suite's backends use for ``precision`` on ``device``."""
    if device == "cuda":
        return {} if precision == "int8" else {"torch": _torch_method(DTYPES[precision], "cuda")}
    ort = importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None
    if precision == "int8":
        return {"onnxruntime-int8": _onnxruntime_method(int8=True)} if ort else {}
    found: dict[str, Method] = {"torch": _torch_method(DTYPES[precision], "cpu")}
    if onednn_available():
        found["onednn"] = _onednn_method(DTYPES[precision])
    if precision == "fp32" and ort:
        found["onnxruntime"] = _onnxruntime_method(int8=False)
    return found


def _fastest(call: Callable[[], Any], device: str) -> float:
    call()
    synchronize(device)
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        call()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def attainable_rate(config: ModelConfig, device: str, precision: str) -> dict[str, Any] | None:
    """The best rate (FLOP/s) over the implementations at the decoder's shapes, with every method's rate and how
    it was measured (JSON-ready, for machine_info); None when no implementation runs this precision here."""
    linears = decoder_linears(config, ATTAINABLE_FRAMES, 1)
    total = sum(linear.flops for linear in linears)
    rates: dict[str, float] = {}
    failed: dict[str, str] = {}
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 rows run in IEEE fp32
    try:
        for name, make in methods(device, precision).items():
            try:
                seconds = sum(linear.count * _fastest(make(linear), device) for linear in linears)
            except Exception as exc:  # noqa: BLE001 - an implementation that cannot run is recorded, not fatal
                failed[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                continue
            rates[name] = total / seconds
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    if not rates:
        return None
    best = max(rates, key=lambda name: rates[name])
    return {
        "flop_rate": rates[best],
        "method": best,
        "rates": rates,
        "failed": failed,
        "frames": ATTAINABLE_FRAMES,
        "shapes": [[linear.rows, linear.inputs, linear.outputs, linear.count] for linear in linears],
        "threads": torch.get_num_threads() if device == "cpu" else None,
    }
