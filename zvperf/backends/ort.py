"""ONNX Runtime backends: the exported decoder step on the CPU (fp32, or int8 weights by dynamic
quantisation), and on CUDA through the CUDA or TensorRT execution providers."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import io
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import filelock
import numpy as np
import torch
from torch import Tensor

from zvperf.backends import BackendUnavailable
from zvperf.backends.onnx_export import (
    INPUT_NAMES,
    OUTPUT_NAME,
    UNMASKED_INPUT_NAMES,
    exported_step,
    exporter_missing,
)
from zvperf.backends.stepping import StepFunction, StepSolver, built_step_solver, graph_inputs
from zvperf.engine.device import cpu_int8_saturates, engine_stream, on_engine_stream, stream_handle
from zvperf.engine.models import ZipVoice
from zvperf.errors import ZvperfError
from zvperf.files import cache_dir, replacing

# The TensorRT execution provider's optimisation profile, as the official TensorRT export has it:
# up to 3000 decoder frames (longer text is chunked by the pipeline) and up to 8 utterances (16 rows
# with classifier-free guidance).
PROFILE_FRAMES = (16, 1000, 3000)
PROFILE_BATCH = (1, 1, 8)

# The TensorRT execution provider builds with TF32 and has no option to turn it off; only this environment
# variable, read when the CUDA libraries load, makes its fp32 IEEE fp32.
TF32_OVERRIDE = "NVIDIA_TF32_OVERRIDE"

# The execution providers each ONNX Runtime backend got in this process, "backend precision" -> providers in
# priority order (machine_info records them).
_PROVIDERS_USED: dict[str, list[str]] = {}

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


def providers_used() -> dict[str, list[str]]:
    """The execution providers each ONNX Runtime backend really ran on in this process."""
    return {key: list(value) for key, value in _PROVIDERS_USED.items()}


def gpu_provider_options(
    provider: str, stream: int, device_id: int, precision: str, trt_profile: dict[str, str] | None = None
) -> list[Any]:
    """The provider list of a CUDA or TensorRT session, both on the engine's stream ``stream`` (a non-zero
    ``cudaStream_t``: ONNX Runtime reads "0" as no stream and makes its own)."""
    cuda = {
        "device_id": device_id,
        "user_compute_stream": str(stream),
        # fp32 is IEEE fp32: the CUDA provider uses TF32 for float products and convolutions unless told not to.
        "use_tf32": "0",
    }
    if provider == "CUDAExecutionProvider":
        return [("CUDAExecutionProvider", cuda)]
    trt = {
        "device_id": device_id,
        "user_compute_stream": str(stream),
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(_trt_cache(precision)),
        **(trt_profile or {}),
    }
    if precision == "fp16":
        # With TensorRT 10 the provider builds weakly typed networks: without the flag it may run the fp16 graph's
        # layers in fp32, and with it TensorRT may narrow what the graph casts up, unless the normalisation's
        # Pow and ReduceMean are explicitly kept in fp32.
        trt |= {"trt_fp16_enable": True, "trt_layer_norm_fp32_fallback": True}
    return [("TensorrtExecutionProvider", trt), ("CUDAExecutionProvider", cuda)]


def _trt_cache(precision: str) -> Path:
    """The TensorRT provider's engine cache: its keys know nothing of TF32, so fp32 engines built under
    NVIDIA_TF32_OVERRIDE=0 get a folder of their own."""
    ieee = "-tf32off" if os.environ.get(TF32_OVERRIDE) == "0" else ""
    return cache_dir() / "ort-trt" / f"{precision}{ieee}"


@contextlib.contextmanager
def _console_output() -> Iterator[io.StringIO]:
    """Everything written to stdout and stderr in the block, Python's and the native libraries' alike.

    ONNX Runtime reports a provider it could not load on the console only (its C++ log on file descriptor 2,
    its Python fallback notice with print), so that is where its reason is read from. These few lines do what
    the wurlitzer package does, which the GPU check's offline machine would otherwise need as one more wheel.
    """
    captured = io.StringIO()
    with tempfile.TemporaryFile(mode="w+b") as sink:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        saved = [os.dup(fd) for fd in (1, 2)]
        try:
            for fd in (1, 2):
                os.dup2(sink.fileno(), fd)
            with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
                yield captured
        finally:
            for fd, original in zip((1, 2), saved, strict=True):
                os.dup2(original, fd)
                os.close(original)
            sink.seek(0)
            captured.write(sink.read().decode("utf-8", "replace"))


def open_session(ort: Any, path: Path, options: Any, providers: list[Any], backend: str, precision: str) -> Any:
    """An InferenceSession on exactly the execution provider asked for (the first of ``providers``).

    ONNX Runtime does not fail when a provider cannot load (its libraries are missing, or it was built for
    another TensorRT or CUDA): it logs the reason and runs the next one, so an ort-trt row would time the CUDA
    provider and an ort-cuda row the CPU. That is refused here, with ONNX Runtime's own words.
    """
    wanted = providers[0] if isinstance(providers[0], str) else providers[0][0]
    if wanted == "TensorrtExecutionProvider":
        # The provider finds libnvinfer only once the tensorrt package has loaded it (ORT's preload_dlls does not).
        importlib.import_module("tensorrt")
    with _console_output() as console, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own error types for a failed session
            raise ZvperfError(f"{backend}: ONNX Runtime could not load {path.name} ({exc}).") from None
    said = [str(w.message) for w in caught] + console.getvalue().splitlines()
    used = list(session.get_providers())
    if not used or used[0] != wanted:
        reason = re.sub(r"\x1b\[[0-9;]*m|\s+", " ", " ".join(said)).strip() or "it gave no reason"
        raise BackendUnavailable(
            f"{backend}: ONNX Runtime would run {used[0] if used else 'nothing'} instead of {wanted} ({reason})"
        )
    for line in said:  # nothing ONNX Runtime said is lost when the session is as asked
        print(line, file=sys.stderr)
    _PROVIDERS_USED[f"{backend} {precision}"] = used
    return session


@dataclasses.dataclass(frozen=True)
class OrtBackend:
    name: str
    provider: str  # the execution provider that must be present
    precisions: tuple[str, ...]
    devices: tuple[str, ...]
    own_allocator: bool = True  # ONNX Runtime's arena, not torch's allocator
    keeps_build: bool = True  # the exported graph (and TensorRT's engines) stay in zvperf's cache

    def unavailable(self, device: str, precision: str) -> str | None:
        extra = "gpu" if device == "cuda" else "onnx"
        if importlib.util.find_spec("onnxruntime") is None:
            return f"onnxruntime is not installed (pip install zvperf[{extra}])"
        if missing := exporter_missing(extra):
            return missing
        available = _onnxruntime().get_available_providers()
        if self.provider not in available:
            return f"onnxruntime has no {self.provider} here (available: {', '.join(available)})"
        if self.provider == "TensorrtExecutionProvider":
            if importlib.util.find_spec("tensorrt") is None:
                return "the TensorRT execution provider needs tensorrt (pip install zvperf[gpu])"
            if precision == "fp32" and os.environ.get(TF32_OVERRIDE) != "0":
                return (
                    "the TensorRT execution provider computes fp32 in TF32 and has no option to stop it: "
                    f"run with {TF32_OVERRIDE}=0 in the environment for IEEE fp32 rows"
                )
        return None

    def graph(self, model: ZipVoice, guided: bool, precision: str, masked: bool = True) -> Path:
        """The export in the precision asked for (TensorRT 11 builds strongly typed: an fp16 engine needs an
        fp16 graph), or the fp32 export with int8 weights; ``masked`` False: the graph for unpadded batches."""
        if precision == "int8":
            return quantized_step(model, guided, masked)
        return exported_step(model, guided, torch.float16 if precision == "fp16" else torch.float32, masked)

    def providers(self, model: ZipVoice, guided: bool, precision: str, device: str) -> list[Any]:
        if self.provider == "CPUExecutionProvider":
            return ["CPUExecutionProvider"]
        stream = stream_handle(engine_stream(device))
        profile = _trt_profile(model, guided) if self.provider == "TensorrtExecutionProvider" else None
        return gpu_provider_options(self.provider, stream, torch.cuda.current_device(), precision, profile)

    def prepare(self, model: ZipVoice, device: str, precision: str) -> StepSolver:
        return built_step_solver(model, lambda guided: self._step(model, guided, device, precision))

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
        providers = self.providers(model, guided, precision, device)
        if self.provider != "TensorrtExecutionProvider":
            session = open_session(ort, path, options, providers, self.name, precision)
        else:
            # The provider builds (or loads) its engine now and writes it to its cache: one process at a time.
            cache = _trt_cache(precision)
            cache.mkdir(parents=True, exist_ok=True)
            with filelock.FileLock(cache / ".lock"):
                session = open_session(ort, path, options, providers, self.name, precision)
        if _PROFILING is not None:
            _PROFILING[1].append(session)
        return session

    def _step(self, model: ZipVoice, guided: bool, device: str, precision: str) -> StepFunction:
        if device != "cpu":
            return _cuda_step(self.session(model, guided, device, precision), _onnxruntime(), device)
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


def _cuda_step(session: Any, ort: Any, device: str) -> StepFunction:
    device_id = torch.cuda.current_device()
    run_options = ort.RunOptions()
    # ORT runs on the engine stream, as torch does: without this it would wait for the GPU after each step.
    run_options.add_run_config_entry("disable_synchronize_execution_providers", "1")
    # The graph's own input types (the fp32 coefficients of an fp16 graph, for one).
    wanted = [_TORCH[arg.type] for arg in session.get_inputs()]
    produced = _TORCH[session.get_outputs()[0].type]

    def step(x: Tensor, constant: Tensor, mask: Tensor | None, conditioning: Tensor, coefficients: Tensor) -> Tensor:
        # The session was made on the engine stream: torch's work around it goes there too (a no-op when the
        # caller is on it already, as the benchmarks are).
        with on_engine_stream(device):
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
