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

On CUDA each shape's product runs ``DEVICE_LOOP`` times back to back between two CUDA events, so the rate is the
device's: one call between the host's clock and a synchronisation timed the host's dispatch, and the H100's rows
came out at 130-220% of such a "limit". Beside it stands the chip's dense peak in the precision, from its
compute capability, SM count and maximum SM clock (``peak_rate``): the attainable rate is what the decoder's
shapes reach one product at a time, the peak what the chip could do at best.
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
DEVICE_LOOP = 20  # products back to back per CUDA timing: enough that the launch of the first hides behind the rest

# Dense FLOPs per clock per SM by compute capability: the tensor cores for fp16 and bf16 (with fp32 accumulation, as
# cuBLAS runs torch's half-precision products) and the FP32 lanes for fp32 (TF32 off, as the fp32 rows run). From
# NVIDIA's A100 and H100 whitepapers (A100: 312 TFLOP/s fp16 = 108 SMs x 1.41 GHz x 2048; H100 SXM: 989 TFLOP/s =
# 132 x 1.83 GHz x 4096). Other architectures' figures differ between their data-centre and consumer parts: no
# peak is claimed for them.
DENSE_FLOP_PER_CLOCK_PER_SM: dict[tuple[int, int], dict[str, int]] = {
    (8, 0): {"fp16": 2048, "bf16": 2048, "fp32": 128},
    (9, 0): {"fp16": 4096, "bf16": 4096, "fp32": 256},
}

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


def _fastest_on_device(call: Callable[[], Any]) -> float:
    """Seconds per call of ``DEVICE_LOOP`` calls queued back to back, by CUDA events (the fastest of REPEATS)."""
    call()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(REPEATS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(DEVICE_LOOP):
            call()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3 / DEVICE_LOOP)
    return best


def _fastest(call: Callable[[], Any], device: str) -> float:
    if device == "cuda":
        return _fastest_on_device(call)
    call()
    synchronize(device)
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        call()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def peak_rate(
    capability: tuple[int, int], sm_count: int, max_clock_mhz: float | None, precision: str
) -> dict[str, Any] | None:
    """The chip's dense peak FLOP rate in ``precision`` (and how it was computed), or None where the table has no
    figure for the architecture or the clock is unknown."""
    per_sm = DENSE_FLOP_PER_CLOCK_PER_SM.get(capability, {}).get(precision)
    if per_sm is None or not max_clock_mhz:
        return None
    return {
        "flop_rate": per_sm * sm_count * max_clock_mhz * 1e6,
        "how": f"{per_sm} FLOP/clock/SM x {sm_count} SMs x {max_clock_mhz:g} MHz (compute capability "
        f"{capability[0]}.{capability[1]})",
    }


def _cuda_peak(precision: str) -> dict[str, Any] | None:
    """``peak_rate`` of this process's CUDA device, its maximum SM clock from NVML."""
    from zvperf.suite.telemetry import cuda_device_uuid, load_nvml, nvml_handle

    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    nvml, _ = load_nvml()
    clock = None
    if nvml is not None:
        try:
            clock = nvml.nvmlDeviceGetMaxClockInfo(nvml_handle(nvml, cuda_device_uuid()), nvml.NVML_CLOCK_SM)
        except Exception:  # noqa: BLE001 - a device NVML cannot read has no peak figure, and the rate still stands
            clock = None
    return peak_rate((props.major, props.minor), props.multi_processor_count, clock, precision)


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
        "peak": _cuda_peak(precision) if device == "cuda" else None,
    }
