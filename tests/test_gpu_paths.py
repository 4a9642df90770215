"""The CUDA, TensorRT and ONNX Runtime GPU code paths, checked on the CPU where they can be: the stream each
is given, the provider a session really got, TF32 in fp32, and caches that concurrent processes share.
What needs a GPU is marked ``cuda`` and skips here with the reason."""

from __future__ import annotations

import importlib
import importlib.util
import threading
import types
from pathlib import Path

import filelock
import pytest
import torch

from tests.helpers import WAIT_S, tiny_config
from zvperf.backends import BackendUnavailable, get_backend
from zvperf.backends import ort as ort_backend
from zvperf.backends.onnx_export import exported_step
from zvperf.engine.device import engine_stream, on_engine_stream, stream_handle
from zvperf.engine.weights import synthetic_model
from zvperf.errors import ZvperfError
from zvperf.files import build_once

needs_onnxruntime = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="no onnxruntime")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ZVPERF_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tiny_graph(tmp_path_factory) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ZVPERF_CACHE", str(tmp_path_factory.mktemp("graphs")))
        model, _ = synthetic_model("zipvoice_distill", config=tiny_config())
        return exported_step(model, guided=False)


# ---------------------------------------------------------------------------------------------
# One stream: its real handle goes to ONNX Runtime's providers and to TensorRT
# ---------------------------------------------------------------------------------------------
def test_the_legacy_default_stream_is_refused():
    """Handle 0 is what torch.cuda.current_stream() gives outside a stream block: ONNX Runtime takes it as
    "no stream" and makes its own, TensorRT synchronises the device on it."""
    with pytest.raises(ZvperfError, match="not the legacy default stream"):
        stream_handle(types.SimpleNamespace(cuda_stream=0))
    assert stream_handle(types.SimpleNamespace(cuda_stream=0x7F3A10)) == 0x7F3A10


@pytest.mark.parametrize("provider", ["CUDAExecutionProvider", "TensorrtExecutionProvider"])
def test_every_gpu_provider_gets_the_engine_stream_and_ieee_fp32(provider):
    options = ort_backend.gpu_provider_options(provider, 0x7F3A10, 0, "fp32", {"trt_profile_min_shapes": "x:1x16x100"})
    assert [name for name, _ in options][-1] == "CUDAExecutionProvider"
    for _, values in options:
        assert values["user_compute_stream"] == str(0x7F3A10) != "0"
    cuda = dict(options)["CUDAExecutionProvider"]
    assert cuda["use_tf32"] == "0"  # the CUDA provider's default is TF32 on
    if provider == "TensorrtExecutionProvider":
        assert options[0][0] == provider and options[0][1]["trt_profile_min_shapes"] == "x:1x16x100"
        assert "trt_fp16_enable" not in options[0][1]


def test_the_tensorrt_provider_builds_fp16_as_fp16():
    (_, trt), _ = ort_backend.gpu_provider_options("TensorrtExecutionProvider", 1, 0, "fp16")
    assert trt["trt_fp16_enable"] is True and trt["trt_layer_norm_fp32_fallback"] is True


def test_on_the_cpu_the_engine_stream_is_no_stream():
    with on_engine_stream("cpu"):
        assert torch.ones(2).sum() == 2


@pytest.mark.cuda
@needs_cuda
def test_the_engine_stream_is_not_the_default_stream_and_orders_work_both_ways():
    stream = engine_stream("cuda")
    assert stream.cuda_stream != 0 and stream != torch.cuda.default_stream()
    x = torch.ones(1 << 20, device="cuda")
    with on_engine_stream("cuda"):
        assert torch.cuda.current_stream() == stream
        y = x * 2
    assert torch.cuda.current_stream() == torch.cuda.default_stream()
    assert float(y.sum()) == 2 * (1 << 20)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("backend", ["ort-cuda", "ort-trt"])
def test_onnx_runtime_gpu_sessions_run_on_the_engine_stream(backend, tiny_graph):
    from zvperf.backends import check_runnable

    try:
        check_runnable(get_backend(backend), "cuda", "fp16")
    except BackendUnavailable as reason:
        pytest.skip(str(reason))
    import onnxruntime as ort

    provider = get_backend(backend).provider
    handle = stream_handle(engine_stream("cuda"))
    providers = ort_backend.gpu_provider_options(provider, handle, torch.cuda.current_device(), "fp16")
    session = ort_backend.open_session(ort, tiny_graph, ort.SessionOptions(), providers, backend, "fp16")
    assert session.get_providers()[0] == provider
    for name, options in session.get_provider_options().items():
        if name != "CPUExecutionProvider":
            assert options["user_compute_stream"] == str(handle), name


# ---------------------------------------------------------------------------------------------
# A backend runs what its name says, or says why not
# ---------------------------------------------------------------------------------------------
@needs_onnxruntime
def test_a_session_that_fell_back_to_another_provider_is_refused_with_onnx_runtimes_words(tiny_graph):
    """Here (the CPU build) ONNX Runtime runs a CUDA session on the CPU without failing: only a warning says so."""
    import onnxruntime as ort

    providers = [("CUDAExecutionProvider", {"device_id": 0})]
    with pytest.raises(BackendUnavailable) as raised:
        ort_backend.open_session(ort, tiny_graph, ort.SessionOptions(), providers, "ort-cuda", "fp32")
    message = str(raised.value)
    assert message.startswith("ort-cuda: ONNX Runtime would run CPUExecutionProvider instead of CUDAExecutionProvider")
    assert "CUDAExecutionProvider' is not in available provider names" in message
    assert "\n" not in message


@needs_onnxruntime
def test_a_session_on_the_provider_asked_for_is_recorded(tiny_graph):
    import onnxruntime as ort

    session = ort_backend.open_session(
        ort, tiny_graph, ort.SessionOptions(), ["CPUExecutionProvider"], "ort-cpu", "fp32"
    )
    assert session.get_providers()[0] == "CPUExecutionProvider"
    assert ort_backend.providers_used()["ort-cpu fp32"] == ["CPUExecutionProvider"]


def test_tensorrt_is_loaded_before_a_tensorrt_session_and_a_fallback_is_refused(monkeypatch, tmp_path):
    """ONNX Runtime's TensorRT provider finds libnvinfer only after ``import tensorrt``; when it cannot load it
    prints an "EP Error" and runs the CUDA provider, which must not be timed as ort-trt."""
    events: list[str] = []
    real_import = importlib.import_module

    def recording_import(name, *args):
        if name == "tensorrt":
            events.append("import tensorrt")
            return types.SimpleNamespace()
        return real_import(name, *args)

    class FallingBack:
        def __init__(self, path, options, providers):
            events.append("session")
            print("EP Error: libnvinfer.so.10: cannot open shared object file when using TensorrtExecutionProvider")

        def get_providers(self):
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    monkeypatch.setattr(importlib, "import_module", recording_import)
    fake_ort = types.SimpleNamespace(InferenceSession=FallingBack)
    providers = ort_backend.gpu_provider_options("TensorrtExecutionProvider", 7, 0, "fp16")
    with pytest.raises(BackendUnavailable, match=r"CUDAExecutionProvider instead of TensorrtExecutionProvider"
                       r" \(EP Error: libnvinfer.so.10: cannot open"):  # fmt: skip
        ort_backend.open_session(fake_ort, tmp_path / "g.onnx", None, providers, "ort-trt", "fp16")
    assert events == ["import tensorrt", "session"]


def test_ort_trt_fp32_needs_tf32_turned_off_in_the_environment(monkeypatch):
    fake_ort = types.SimpleNamespace(
        get_available_providers=lambda: ["TensorrtExecutionProvider", "CPUExecutionProvider"]
    )
    monkeypatch.setattr(ort_backend, "_onnxruntime", lambda: fake_ort)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: object() if name == "tensorrt" else real(name, *a)
    )
    backend = get_backend("ort-trt")
    monkeypatch.delenv("NVIDIA_TF32_OVERRIDE", raising=False)
    assert "NVIDIA_TF32_OVERRIDE=0" in (backend.unavailable("cuda", "fp32") or "")
    assert backend.unavailable("cuda", "fp16") is None
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "0")
    assert backend.unavailable("cuda", "fp32") is None


# ---------------------------------------------------------------------------------------------
# Native TensorRT: IEEE fp32
# ---------------------------------------------------------------------------------------------
def fake_tensorrt(record: dict) -> types.ModuleType:
    """The part of the tensorrt module a build touches, recording the builder configuration."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.16.1.11"

    class Config:
        def __init__(self):
            self.flags = {"TF32"}  # TensorRT's default
            record["config"] = self

        def set_memory_pool_limit(self, pool, size):
            pass

        def clear_flag(self, flag):
            self.flags.discard(flag)

        def add_optimization_profile(self, profile):
            pass

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return object()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return types.SimpleNamespace(set_shape=lambda *a: None)

        def build_serialized_network(self, network, config):
            return b"plan"

    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.Builder = Builder
    trt.OnnxParser = lambda network, logger: types.SimpleNamespace(parse_from_file=lambda path: True)
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
    trt.BuilderFlag = types.SimpleNamespace(TF32="TF32")
    return trt


@pytest.mark.skipif(importlib.util.find_spec("onnx") is None, reason="onnx is not installed")
def test_tensorrt_engines_are_built_without_tf32(monkeypatch, tmp_path):
    from zvperf.backends import tensorrt_native

    record: dict = {}
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", fake_tensorrt(record))
    model, _ = synthetic_model("zipvoice_distill", config=tiny_config())
    tensorrt_native.build_engine(model, False, "fp32", tmp_path / "engine.plan")
    assert (tmp_path / "engine.plan").read_bytes() == b"plan"
    assert "TF32" not in record["config"].flags


# ---------------------------------------------------------------------------------------------
# Caches that concurrent processes share
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def lock_arrivals(monkeypatch) -> threading.Event:
    """Set when a thread asks for a build lock (just before it waits for it)."""
    arrived = threading.Event()
    real = filelock.FileLock

    def announcing(*args, **kwargs):
        arrived.set()
        return real(*args, **kwargs)

    monkeypatch.setattr(filelock, "FileLock", announcing)
    return arrived


def test_a_build_in_progress_is_waited_for_not_repeated(tmp_path, lock_arrivals):
    """While one process builds a file (it holds the lock), another that needs it waits and takes that file."""
    target = tmp_path / "cache" / "step.onnx"
    target.parent.mkdir()
    builds: list[str] = []
    with filelock.FileLock(f"{target}.lock"):  # the other process, mid-build
        lock_arrivals.clear()
        waiter = threading.Thread(target=build_once, args=(target, lambda: builds.append("again")))
        waiter.start()
        assert lock_arrivals.wait(timeout=WAIT_S), "the second builder did not wait for the first"
        target.write_bytes(b"graph")
    waiter.join()
    assert builds == [] and target.read_bytes() == b"graph"


@pytest.mark.skipif(importlib.util.find_spec("onnx") is None, reason="onnx is not installed")
def test_concurrent_exports_of_one_graph_export_once(monkeypatch, lock_arrivals):
    """Two shards exporting the same graph at once: the second waits for the first's file."""
    from zvperf.backends import onnx_export

    model, _ = synthetic_model("zipvoice_distill", config=tiny_config())
    real, calls = onnx_export.export_step, []
    exporting = threading.Event()

    def first_export_waits_for_the_second_shard(*args, **kwargs):
        calls.append(1)
        exporting.set()
        second_waiting = lock_arrivals.wait(timeout=WAIT_S)
        real(*args, **kwargs)
        assert second_waiting

    monkeypatch.setattr(onnx_export, "export_step", first_export_waits_for_the_second_shard)
    paths: list[Path] = []
    first = threading.Thread(target=lambda: paths.append(exported_step(model, False)))
    first.start()
    assert exporting.wait(timeout=WAIT_S)
    lock_arrivals.clear()
    paths.append(exported_step(model, False))
    first.join()
    assert len(calls) == 1 and len(set(paths)) == 1 and paths[0].stat().st_size > 0


# ---------------------------------------------------------------------------------------------
# CUDA graphs: one memory pool per solver, released with it
# ---------------------------------------------------------------------------------------------
@pytest.mark.cuda
@needs_cuda
def test_the_cuda_graphs_of_one_solver_share_one_pool_released_with_it():
    import gc

    from zvperf.backends.cuda_graph import GraphSolver

    model, _ = synthetic_model("zipvoice_distill", config=tiny_config())
    model = model.cuda()
    with torch.inference_mode():
        inputs = [torch.randn(1, frames, model.feat_dim, device="cuda") for frames in (40, 80, 120)]
        expected = [model.solve(x0, x0, torch.zeros_like(x0), None, 2, 3.0) for x0 in inputs]
    # torch keeps a cuBLAS workspace per stream for the stream's lifetime, outside what empty_cache frees (the
    # first run on an H100 saw 36 MB of one per stream the solver used): cleared on both sides, so that what is
    # compared is the graphs' pool.
    torch.cuda.synchronize()
    torch._C._cuda_clearCublasWorkspaces()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_reserved()
    solver = GraphSolver(model)
    with torch.inference_mode():
        for x0, reference in zip(inputs, expected, strict=True):
            assert torch.allclose(solver(x0, x0, torch.zeros_like(x0), None, 2, 3.0), reference, atol=1e-4)
    assert len({captured.graph.pool() for captured in solver.captured.values()}) == 1
    del solver
    gc.collect()
    torch.cuda.synchronize()
    torch._C._cuda_clearCublasWorkspaces()
    torch.cuda.empty_cache()
    assert torch.cuda.memory_reserved() <= before
