"""ONNX Runtime backends: the exported decoder step on the CPU (fp32, or int8 weights by dynamic
quantisation), and on CUDA through the CUDA or TensorRT execution providers."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from zvperf.backends.onnx_export import (
    INPUT_NAMES,
    OUTPUT_NAME,
    UNMASKED_INPUT_NAMES,
    cache_dir,
    exported_step,
    exporter_missing,
)
from zvperf.backends.stepping import StepFunction, StepSolver, graph_inputs
from zvperf.engine.device import cpu_int8_saturates
from zvperf.engine.models import ZipVoice
from zvperf.errors import ZvperfError
from zvperf.files import replacing

# The TensorRT execution provider's optimisation profile, as the official TensorRT export has it:
# up to 3000 decoder frames (longer text is chunked by the pipeline) and up to 8 utterances (16 rows
# with classifier-free guidance).
PROFILE_FRAMES = (16, 1000, 3000)
PROFILE_BATCH = (1, 1, 8)


# While a profile is taken (zvperf profile): where sessions write their profiles, and the sessions opened so far.
# ONNX Runtime profiles a session only when asked as it is created.
_PROFILING: tuple[Path, list[Any]] | None = None


@contextlib.contextmanager
def profiled_sessions(folder: Path) -> Iterator[list[Any]]:
    """Every session opened in the block profiles its runs into ``folder``; yields the list of those sessions
    (``session.end_profiling()`` writes a profile and returns its path)."""
    global _PROFILING
    sessions: list[Any] = []
    _PROFILING = (folder, sessions)
    try:
        yield sessions
    finally:
        _PROFILING = None


def _onnxruntime() -> Any:
    import onnxruntime

    return onnxruntime


def inline_identity_initializers(graph: Any) -> int:
    """Make every consumer of ``Identity(initializer)`` read the initializer itself, and drop those Identity nodes;
    returns how many there were.

    The exporter stores identical parameters once and feeds the copies through Identity nodes: a checkpoint
    whose layers are still equal (the official code initialises a stack by copying one layer) has hundreds of
    them. ONNX Runtime's quantiser quantises only weights that are initializers: it would silently leave every
    such MatMul in float, and fail outright on a convolution ("Expected ... to be an initializer").
    """
    initializers = {tensor.name for tensor in graph.initializer}
    outputs = {output.name for output in graph.output}
    alias = {
        node.output[0]: node.input[0]
        for node in graph.node
        if node.op_type == "Identity" and node.input[0] in initializers and node.output[0] not in outputs
    }
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name in alias:
                node.input[index] = alias[name]
    kept = [node for node in graph.node if not (node.op_type == "Identity" and node.output[0] in alias)]
    del graph.node[:]
    graph.node.extend(kept)
    return len(alias)


def quantized_step(model: ZipVoice, guided: bool, masked: bool = True) -> Path:
    """The fp32 export with int8 weights (dynamic quantisation: activations quantised per call), cached.

    Only the weight products (MatMul with a constant weight) are quantised, one scale per weight tensor; the
    depthwise convolutions, the attention's products, the guidance combine and the Euler update stay in float
    (int8 convolutions were slower than the float ones, and per-channel scales measured no better). On an x86
    CPU without VNNI the weights get 7 bits (reduce_range): its int8 kernels add pairs of u8 x s8 products
    into saturating 16-bit sums, which took the full-size model's error from 6e-2 to 0.25.
    """
    source = exported_step(model, guided, masked=masked)
    reduce_range = cpu_int8_saturates()
    target = source.with_name(source.stem + ("-int8r7.onnx" if reduce_range else "-int8.onnx"))
    if not target.is_file():
        import onnx

        try:
            graph = onnx.load(str(source))
            inline_identity_initializers(graph.graph)
            with replacing(target) as temporary:
                quantize_weight_products(graph, temporary, reduce_range)
        except Exception as exc:  # noqa: BLE001 - any quantiser failure becomes the backend's reason
            raise ZvperfError(f"int8 quantisation of {source.name} failed ({type(exc).__name__}: {exc}).") from None
    return target


def quantize_weight_products(graph: Any, target: Path, reduce_range: bool) -> None:
    """Write ``graph`` (an onnx ModelProto) to ``target`` with its weight products in int8 (see quantized_step)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)  # the quantiser logs a warning for every tensor it leaves in float
    try:
        quantize_dynamic(
            graph,
            str(target),
            op_types_to_quantize=["MatMul"],
            per_channel=False,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8,
            extra_options={"MatMulConstBOnly": True},
        )
    finally:
        logging.disable(logging.NOTSET)


def _trt_profile(model: ZipVoice, guided: bool) -> dict[str, str]:
    """min/opt/max shapes for the TensorRT execution provider, per dynamic input."""
    shapes: dict[str, list[str]] = {"min": [], "opt": [], "max": []}
    for level, batch, frames in zip(("min", "opt", "max"), PROFILE_BATCH, PROFILE_FRAMES, strict=True):
        rows = 2 * batch if guided else batch
        shapes[level] += [
            f"x:{batch}x{frames}x{model.feat_dim}",
            f"constant:{rows}x{frames}x{model.config.fm_decoder_dim}",
            f"padding_mask:{rows}x{frames}",
        ]
    return {f"trt_profile_{level}_shapes": ",".join(values) for level, values in shapes.items()}


@dataclasses.dataclass(frozen=True)
class OrtBackend:
    name: str
    provider: str  # the execution provider that must be present
    precisions: tuple[str, ...]
    devices: tuple[str, ...]

    def unavailable(self, device: str, precision: str) -> str | None:
        extra = "gpu" if device == "cuda" else "onnx"
        if importlib.util.find_spec("onnxruntime") is None:
            return f"onnxruntime is not installed (pip install zvperf[{extra}])"
        if missing := exporter_missing(extra):
            return missing
        available = _onnxruntime().get_available_providers()
        if self.provider not in available:
            return f"onnxruntime has no {self.provider} here (available: {', '.join(available)})"
        if self.provider == "TensorrtExecutionProvider" and importlib.util.find_spec("tensorrt") is None:
            return "the TensorRT execution provider needs tensorrt (pip install zvperf[gpu])"
        return None

    def graph(self, model: ZipVoice, guided: bool, precision: str, masked: bool = True) -> Path:
        """The export in the precision asked for (TensorRT 11 builds strongly typed: an fp16 engine needs an
        fp16 graph), or the fp32 export with int8 weights; ``masked`` False: the graph for unpadded batches."""
        if precision == "int8":
            return quantized_step(model, guided, masked)
        return exported_step(model, guided, torch.float16 if precision == "fp16" else torch.float32, masked)

    def providers(self, model: ZipVoice, guided: bool, precision: str) -> list[Any]:
        if self.provider == "CPUExecutionProvider":
            return ["CPUExecutionProvider"]
        # ORT runs on torch's current stream, so its work is ordered with torch's without a wait.
        stream = str(torch.cuda.current_stream().cuda_stream)
        cuda = {"device_id": torch.cuda.current_device(), "user_compute_stream": stream}
        if self.provider == "CUDAExecutionProvider":
            return [("CUDAExecutionProvider", cuda)]
        trt = {
            "device_id": cuda["device_id"],
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache_dir() / "ort-trt"),
            **_trt_profile(model, guided),
        }
        return [("TensorrtExecutionProvider", trt), ("CUDAExecutionProvider", cuda)]

    def prepare(self, model: ZipVoice, device: str, precision: str) -> StepSolver:
        steps: dict[bool, StepFunction] = {}

        def step_for(guided: bool) -> StepFunction:
            if guided not in steps:
                steps[guided] = self._step(model, guided, device, precision)
            return steps[guided]

        # Build the graph the model normally needs now, so that its cost stays out of timed calls.
        step_for(not model.guidance_is_input)
        return StepSolver(model, step_for)

    def session(self, model: ZipVoice, guided: bool, device: str, precision: str, masked: bool = True) -> Any:
        ort = _onnxruntime()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if device == "cpu":
            options.intra_op_num_threads = torch.get_num_threads()
        path = self.graph(model, guided, precision, masked)
        if _PROFILING is not None:
            options.enable_profiling = True
            options.profile_file_prefix = str(_PROFILING[0] / f"{self.name}-{path.stem}")
        try:
            session = ort.InferenceSession(str(path), options, providers=self.providers(model, guided, precision))
        except Exception as exc:  # noqa: BLE001 - ORT raises its own error types for a failed session
            raise ZvperfError(f"{self.name}: ONNX Runtime could not load {path.name} ({exc}).") from None
        if _PROFILING is not None:
            _PROFILING[1].append(session)
        return session

    def _step(self, model: ZipVoice, guided: bool, device: str, precision: str) -> StepFunction:
        if device != "cpu":
            return _cuda_step(self.session(model, guided, device, precision), _onnxruntime())
        sessions: dict[bool, Any] = {}

        def session_for(masked: bool) -> Any:
            if masked not in sessions:
                sessions[masked] = self.session(model, guided, device, precision, masked)
            return sessions[masked]

        session_for(False)  # the graph of unpadded batches (one utterance, equal lengths) now; the masked one when met
        return _cpu_step(session_for)


def _cpu_step(session_for: Callable[[bool], Any]) -> StepFunction:
    """A step on the graph without a mask when nothing is padded, else on the masked graph."""

    def step(x: Tensor, constant: Tensor, mask: Tensor | None, conditioning: Tensor, coefficients: Tensor) -> Tensor:
        if mask is None:
            names, inputs = UNMASKED_INPUT_NAMES, [x, constant, conditioning, coefficients]
        else:
            names, inputs = INPUT_NAMES, [x, constant, mask, conditioning, coefficients]
        # CPU tensors share memory with numpy: no copies in or out.
        feed = {name: t.contiguous().numpy() for name, t in zip(names, inputs, strict=True)}
        return torch.from_numpy(session_for(mask is not None).run([OUTPUT_NAME], feed)[0])

    return step


_NUMPY = {torch.float32: np.float32, torch.float16: np.float16, torch.bool: np.bool_}
_TORCH = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16, "tensor(bool)": torch.bool}


def _cuda_step(session: Any, ort: Any) -> StepFunction:
    device_id = torch.cuda.current_device()
    run_options = ort.RunOptions()
    # ORT runs on torch's stream (user_compute_stream); without this it would wait for the GPU after each step.
    run_options.add_run_config_entry("disable_synchronize_execution_providers", "1")
    # The graph's own input types (the fp32 coefficients of an fp16 graph, for one).
    wanted = [_TORCH[arg.type] for arg in session.get_inputs()]
    produced = _TORCH[session.get_outputs()[0].type]

    def step(x: Tensor, constant: Tensor, mask: Tensor | None, conditioning: Tensor, coefficients: Tensor) -> Tensor:
        binding = session.io_binding()
        inputs = graph_inputs(x, constant, mask, conditioning, coefficients)
        tensors = [t.to(dtype).contiguous() for t, dtype in zip(inputs, wanted, strict=True)]
        for name, t in zip(INPUT_NAMES, tensors, strict=True):
            binding.bind_input(name, "cuda", device_id, _NUMPY[t.dtype], tuple(t.shape), t.data_ptr())
        out = torch.empty(tensors[0].shape, dtype=produced, device=tensors[0].device)
        binding.bind_output(OUTPUT_NAME, "cuda", device_id, _NUMPY[out.dtype], tuple(out.shape), out.data_ptr())
        session.run_with_iobinding(binding, run_options)
        return out.to(x.dtype)

    return step


BACKENDS = [
    OrtBackend("ort-cpu", "CPUExecutionProvider", ("fp32",), ("cpu",)),
    OrtBackend("ort-int8", "CPUExecutionProvider", ("int8",), ("cpu",)),
    OrtBackend("ort-cuda", "CUDAExecutionProvider", ("fp32", "fp16"), ("cuda",)),
    OrtBackend("ort-trt", "TensorrtExecutionProvider", ("fp32", "fp16"), ("cuda",)),
]
