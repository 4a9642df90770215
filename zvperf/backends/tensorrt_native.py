"""trt: a native TensorRT engine built from the exported decoder step (fp16 or fp32).

The engine has one optimisation profile over batch and frames and is cached on
disk under a key of model hash, GPU, TensorRT version, precision and profile, so only the first
use pays for the build. Inputs outside the profile are refused with the profile in the message;
the pipeline keeps utterances inside it by chunking long text.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from typing import Any

import torch

from zvperf.backends.onnx_export import (
    INPUT_NAMES,
    OUTPUT_NAME,
    exported_step,
    exporter_missing,
    model_digest,
)
from zvperf.backends.ort import PROFILE_BATCH, PROFILE_FRAMES
from zvperf.backends.stepping import StepFunction, StepSolver, built_step_solver, graph_inputs
from zvperf.engine.device import engine_stream, on_engine_stream, stream_handle
from zvperf.engine.models import ZipVoice
from zvperf.engine.precision import DTYPES
from zvperf.errors import ZvperfError
from zvperf.files import build_once, cache_dir, write_atomic

WORKSPACE_BYTES = 4 << 30
# Part of every engine's cache name: bump it when the build settings change (2: TF32 off).
ENGINE_VERSION = 2


def _engine_path(model: ZipVoice, guided: bool, precision: str, trt: Any) -> Path:
    gpu = torch.cuda.get_device_name().replace(" ", "_")
    profile = f"b{PROFILE_BATCH[-1]}-f{PROFILE_FRAMES[0]}-{PROFILE_FRAMES[-1]}"
    kind = "cfg" if guided else "single"
    version = f"trt{trt.__version__}-e{ENGINE_VERSION}"
    name = f"{model.name}-{model_digest(model)}-{kind}-{precision}-{gpu}-{version}-{profile}.plan"
    return cache_dir() / "trt" / name


def _shapes(model: ZipVoice, guided: bool, batch: int, frames: int) -> dict[str, tuple[int, ...]]:
    rows = 2 * batch if guided else batch
    return {
        "x": (batch, frames, model.feat_dim),
        "constant": (rows, frames, model.config.fm_decoder_dim),
        "padding_mask": (rows, frames),
    }


def build_engine(model: ZipVoice, guided: bool, precision: str, path: Path) -> None:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # Strongly typed: the graph's own types decide each layer's precision (TensorRT 11 has no other mode;
    # 10.x needs the flag). An fp16 engine is therefore built from the fp16 export.
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(0 if strongly_typed is None else 1 << int(strongly_typed))
    parser = trt.OnnxParser(network, logger)
    onnx_path = exported_step(model, guided, DTYPES[precision])
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ZvperfError(f"trt: TensorRT could not parse {onnx_path.name} ({errors}).")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    # TensorRT computes fp32 in TF32 unless told not to ("Enabled by default"): fp32 is IEEE fp32 here.
    config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    levels = [_shapes(model, guided, b, f) for b, f in zip(PROFILE_BATCH, PROFILE_FRAMES, strict=True)]
    for name in levels[0]:
        profile.set_shape(name, *(level[name] for level in levels))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ZvperfError(f"trt: building the {precision} TensorRT engine from {onnx_path.name} failed (see its log).")
    write_atomic(path, bytes(serialized))


@dataclasses.dataclass(frozen=True)
class TensorRT:
    name: str = "trt"
    precisions: tuple[str, ...] = ("fp16", "fp32")
    devices: tuple[str, ...] = ("cuda",)
    own_allocator: bool = True  # the engine's activations and weights are TensorRT's allocations
    keeps_build: bool = True  # the export and the built engine stay in zvperf's cache

    def unavailable(self, device: str, precision: str) -> str | None:
        if importlib.util.find_spec("tensorrt") is None:
            return "tensorrt is not installed (pip install zvperf[gpu])"
        return exporter_missing("gpu")

    def prepare(self, model: ZipVoice, device: str, precision: str) -> StepSolver:
        return built_step_solver(model, lambda guided: self._step(model, guided, device, precision))

    def _step(self, model: ZipVoice, guided: bool, device: str, precision: str) -> StepFunction:
        import tensorrt as trt

        path = _engine_path(model, guided, precision, trt)
        build_once(path, lambda: build_engine(model, guided, precision, path))
        # TensorRT adds a device synchronisation to every call on the legacy default stream.
        stream = stream_handle(engine_stream(device))
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise ZvperfError(f"trt: the cached engine {path} could not be loaded; delete it to rebuild.")
        context = engine.create_execution_context()
        low, high = PROFILE_FRAMES[0], PROFILE_FRAMES[-1]
        # The engine takes the types of its graph; the step converts, should the model's differ.
        as_torch = {trt.float32: torch.float32, trt.float16: torch.float16, trt.bool: torch.bool}
        wanted = [as_torch[engine.get_tensor_dtype(name)] for name in INPUT_NAMES]
        produced = as_torch[engine.get_tensor_dtype(OUTPUT_NAME)]

        def step(
            x: torch.Tensor,
            constant: torch.Tensor,
            mask: torch.Tensor | None,
            conditioning: torch.Tensor,
            coefficients: torch.Tensor,
        ) -> torch.Tensor:
            batch, frames = x.shape[:2]
            if not low <= frames <= high or batch > PROFILE_BATCH[-1]:
                raise ZvperfError(
                    f"trt: {batch} x {frames} frames is outside the engine's profile "
                    f"(batch 1-{PROFILE_BATCH[-1]}, frames {low}-{high})."
                )
            with on_engine_stream(device):  # the inputs are made on the stream the engine runs on
                inputs = graph_inputs(x, constant, mask, conditioning, coefficients)
                tensors = [t.to(dtype).contiguous() for t, dtype in zip(inputs, wanted, strict=True)]
                for name, t in zip(INPUT_NAMES, tensors, strict=True):
                    context.set_input_shape(name, tuple(t.shape))
                    context.set_tensor_address(name, t.data_ptr())
                out = torch.empty(tensors[0].shape, dtype=produced, device=tensors[0].device)
                context.set_tensor_address(OUTPUT_NAME, out.data_ptr())
                if not context.execute_async_v3(stream):
                    raise ZvperfError("trt: TensorRT failed to enqueue the decoder step.")
                return out.to(x.dtype)

        return step


BACKENDS = [TensorRT()]
