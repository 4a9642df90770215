"""Every backend is checked against the reference vectors; the ONNX export is dynamic and cached."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import CASE_DIRS, tiny_config, tiny_weights
from zvperf import backends
from zvperf.backends import BackendUnavailable, check_runnable, compile_cache, get_backend
from zvperf.backends.compiled import Compiled, FellBackToEager
from zvperf.backends.onnx_export import example_inputs, exported_step, model_digest
from zvperf.cli import main
from zvperf.engine.conformance import load_case, run_case
from zvperf.engine.models import DecoderStep
from zvperf.engine.weights import synthetic_model

# The precision each backend is checked in here.
PRECISION = {"ort-int8": "int8", "trt": "fp16", "ort-trt": "fp16"}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Exported graphs and engines go to a fresh cache per test."""
    monkeypatch.setenv("ZVPERF_CACHE", str(tmp_path / "cache"))


def run_or_skip(backend: str, precision: str):
    try:
        check_runnable(get_backend(backend), "cuda" if backend in GPU_ONLY else "cpu", precision)
    except BackendUnavailable as reason:
        pytest.skip(str(reason))


GPU_ONLY = {name for name in backends.backend_names() if get_backend(name).devices == ("cuda",)}


@pytest.mark.parametrize(
    "backend",
    [pytest.param(name, marks=pytest.mark.slow) if name == "compile" else name for name in backends.backend_names()],
)
@pytest.mark.parametrize("case_dir", CASE_DIRS, ids=lambda p: p.name)
def test_every_backend_reproduces_the_conformance_vectors(backend, case_dir):
    precision = PRECISION.get(backend, "fp32")
    run_or_skip(backend, precision)
    device = "cuda" if backend in GPU_ONLY else "cpu"
    prepare = get_backend(backend).prepare
    try:
        checks = run_case(load_case(case_dir), device=device, precision=precision, prepare=prepare)
    except BackendUnavailable as reason:  # a checkout path that takes text, not a solve's inputs (official-onnx)
        pytest.skip(str(reason))
    for check in checks:
        assert check.passed, f"{backend} {check.name}: error {check.error:.2e} > {check.tolerance:.0e}"


def test_gpu_backends_say_why_they_cannot_run_here():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for name in GPU_ONLY:
        with pytest.raises(BackendUnavailable, match="does not run on cpu|no CUDA device"):
            check_runnable(get_backend(name), "cpu", "fp16")
        with pytest.raises(BackendUnavailable):
            check_runnable(get_backend(name), "cuda", "fp16")


def test_a_missing_package_is_the_reason_not_a_crash(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(BackendUnavailable, match=r"onnxruntime is not installed \(pip install zvperf\[onnx\]\)"):
        check_runnable(get_backend("ort-cpu"), "cpu", "fp32")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorrt" else real(name, *a))
    assert get_backend("trt").unavailable("cuda", "fp16") == "tensorrt is not installed (pip install zvperf[gpu])"


def test_precisions_a_backend_lacks_are_refused():
    with pytest.raises(BackendUnavailable, match="backend ort-cpu has no fp16 mode"):
        check_runnable(get_backend("ort-cpu"), "cpu", "fp16")


def test_conform_command_runs_a_backend(capsys):
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime is not installed")
    assert main(["conform", str(CASE_DIRS[0]), "--backend", "ort-cpu"]) == 0
    out = capsys.readouterr().out
    assert "(zipvoice, ort-cpu, cpu, fp32)" in out and out.count(" ok") == 3


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime is not installed")
@pytest.mark.parametrize("guided", [False, True], ids=["single", "cfg"])
def test_the_onnx_export_is_dynamic_in_batch_and_frames(guided):
    """One export on the pinned torch serves every batch and length, including lengths that no
    downsampling factor divides."""
    import onnxruntime as ort

    model, _ = synthetic_model("zipvoice" if guided else "zipvoice_distill", config=tiny_config())
    path = exported_step(model, guided)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    step = DecoderStep(model.fm_decoder, model.feat_dim, guided).eval()
    for batch, frames in [(1, 16), (1, 37), (3, 100), (2, 513)]:
        inputs = example_inputs(model, guided, torch.float32, batch, frames)
        feed = {arg.name: t.numpy() for arg, t in zip(session.get_inputs(), inputs, strict=True)}
        with torch.inference_mode():
            expected = step(*inputs).numpy()
        (got,) = session.run(None, feed)
        assert got.shape == expected.shape == (batch, frames, model.feat_dim)
        assert np.abs(got - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime is not installed")
def test_exports_are_cached_by_model_hash():
    model, _ = synthetic_model("zipvoice_distill", config=tiny_config())
    first = exported_step(model, guided=False)
    stamp = first.stat().st_mtime_ns
    assert exported_step(model, guided=False) == first and first.stat().st_mtime_ns == stamp
    other, _ = synthetic_model("zipvoice_distill", seed=1, config=tiny_config())
    assert model_digest(other) != model_digest(model)
    assert exported_step(other, guided=False) != first


def test_a_backend_that_disagrees_fails_its_benchmark_untimed(pytester, monkeypatch, tmp_path):
    """Verified before timed: a backend whose output is off by 5% fails with the measured error."""

    class Noisy:
        name, precisions, devices = "noisy", ("fp32",), ("cpu",)

        def unavailable(self, device, precision):
            return None

        def prepare(self, model, device, precision):
            def solve(*args, **kwargs):
                out = model.solve(*args, **kwargs)
                return out + 0.05 * out.abs().max()

            return solve

    from tests.helpers import write_official_dir

    root = tmp_path / "weights"
    write_official_dir(tiny_weights("zipvoice_distill"), root / "zipvoice_distill")
    monkeypatch.setitem(backends._registry(), "noisy", Noisy())
    pytester.makepyfile(test_benchmarks=(CASE_DIRS[0].parents[2] / "test_benchmarks.py").read_text())
    out = pytester.path / "out.json"
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--benchmark-only", f"--benchmark-json={out}", "--zv-device=cpu",
        f"--zv-weights={root}", "--zv-models=zipvoice_distill", "--zv-steps=2", "--zv-backends=noisy,torch",
        "--zv-rounds=2", "--zv-warmup=0", "-k", "solver or e2e",
    )  # fmt: skip
    result.assert_outcomes(passed=2, failed=2)
    difference = "*zipvoice_distill-noisy-fp32: its x1 (2 steps, * frames) differs from zvperf's torch fp32 by 5.*e-02*"
    result.stdout.fnmatch_lines([difference + "not timed"])
    assert "During handling of the above exception" not in result.stdout.str()
    timed = {b["param"] for b in json.loads(out.read_text())["benchmarks"]}
    assert timed == {"zipvoice_distill-2step-torch-fp32"}


def test_a_cpu_backend_is_verified_then_timed(pytester, tmp_path):
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime is not installed")
    from tests.helpers import run_tiny_benchmarks

    result, out = run_tiny_benchmarks(pytester, tmp_path / "weights", "--zv-backends=ort-cpu", "--zv-batch=1,2")
    result.assert_outcomes(passed=2)
    saved = json.loads(out.read_text())
    # What the session really ran on, as ONNX Runtime reports it.
    assert saved["machine_info"]["zvperf"]["onnxruntime_providers"]["ort-cpu fp32"] == ["CPUExecutionProvider"]
    benches = {b["param"]: b["extra_info"] for b in saved["benchmarks"]}
    assert set(benches) == {"zipvoice_distill-2step-ort-cpu-fp32-100f", "zipvoice_distill-2step-ort-cpu-fp32-100f-b2"}
    for info in benches.values():
        assert info["backend"] == "ort-cpu" and info["frames"] == 100
        assert 0 <= info["verified_error"] <= 1e-3  # checked against torch fp32 before timing
    single, double = (
        benches["zipvoice_distill-2step-ort-cpu-fp32-100f"],
        benches["zipvoice_distill-2step-ort-cpu-fp32-100f-b2"],
    )
    assert double["batch"] == 2 and double["audio_seconds"] == pytest.approx(2 * single["audio_seconds"])


@pytest.mark.skipif(importlib.util.find_spec("onnx") is None, reason="onnx is not installed")
def test_the_fp16_export_is_a_valid_half_precision_graph():
    """What the TensorRT and CUDA backends build fp16 engines from (TensorRT 11 is strongly typed)."""
    import onnx

    model, _ = synthetic_model("zipvoice_distill", config=tiny_config())
    graph = onnx.load(str(exported_step(model, guided=False, dtype=torch.float16)))
    onnx.checker.check_model(graph)
    types = {i.name: i.type.tensor_type.elem_type for i in graph.graph.input}
    half, single, boolean = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT, onnx.TensorProto.BOOL
    assert types == {"x": half, "constant": half, "padding_mask": boolean, "conditioning": half, "coefficients": single}
    assert graph.graph.output[0].type.tensor_type.elem_type == half


@pytest.mark.skipif(importlib.util.find_spec("onnx") is None, reason="onnx is not installed")
def test_the_fp16_export_keeps_softmax_softplus_and_normalisation_in_fp32():
    """Like the eager model (and autocast): the half-precision graph casts up around these operators, which
    strongly typed TensorRT and ONNX Runtime then run in fp32 (softplus is exported as Exp, Log and Where)."""
    import onnx

    model, _ = synthetic_model("zipvoice_distill", config=tiny_config())
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(exported_step(model, False, torch.float16)))).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input]}
    types.update({i.name: i.data_type for i in graph.initializer})
    watched = {"Softmax", "Exp", "Log", "ReduceMean", "Pow", "Sqrt"}
    inputs = {(node.op_type, types.get(node.input[0])) for node in graph.node if node.op_type in watched}
    assert {op for op, _ in inputs} >= {"Softmax", "Exp", "Log", "ReduceMean"}
    assert all(elem == onnx.TensorProto.FLOAT for _, elem in inputs), inputs


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def counting_compiler(calls: list[tuple[int, ...]], compiled: list[int] | None = None):
    """A torch.compile backend that runs dynamo's captured graph and records the input shape of every call (a call
    that reaches it ran compiled code, not the eager fallback) and, in ``compiled``, every compilation."""

    def compiler(graph_module, example_inputs):
        if compiled is not None:
            compiled.append(len(calls))

        def run(*args):
            calls.append(tuple(next(a for a in args if isinstance(a, torch.Tensor) and a.dim() == 3).shape))
            return graph_module.forward(*args)

        return run

    return compiler


def solve_inputs(model, batch: int, frames: int):
    generator = torch.Generator().manual_seed(frames)
    shape = (batch, frames, model.feat_dim)
    return torch.randn(shape, generator=generator), torch.randn(shape, generator=generator), torch.zeros(shape)


def test_compile_runs_compiled_code_at_every_length_or_fails_saying_it_fell_back(fresh_dynamo, monkeypatch, tmp_path):
    """More lengths than dynamo's recompile limit (8), every step of every one through the compiled graph; and
    a solve that would need a graph past the limit fails instead of quietly running eagerly. (One test: tracing
    the tiny model takes dynamo about 15 s per graph on a 2-core machine.)"""
    model, _ = synthetic_model("zipvoice_distill", config=tiny_config())
    calls: list[tuple[int, ...]] = []
    compiled: list[int] = []
    solver = Compiled(compiler=counting_compiler(calls, compiled)).prepare(model, "cpu", "fp32")
    saved: list[Path] = []  # what would be kept for the next process: after each call that compiled a graph
    monkeypatch.setattr(compile_cache, "save", saved.append)
    solver.kept = tmp_path / "kept.bin"
    # 100 first: the feature channels' size, which duck shaping used to give the frame count (a second compile).
    lengths = (100, 16, 17, 37, 64, 129, 250, 333, 401, 513)
    with torch.inference_mode():
        for frames in lengths:
            x0, text, speech = solve_inputs(model, 1, frames)
            ours = solver(x0, text, speech, None, 2, 3.0)
            assert torch.allclose(ours, model.solve(x0, text, speech, None, 2, 3.0), atol=1e-5)
        assert [shape[:2] for shape in calls] == [(1, frames) for frames in lengths for _ in range(2)]
        assert compiled == [0]  # one compilation served every step of every length: no recompile
        solver(*solve_inputs(model, 1, 77), None, 4, 3.0)  # more steps, another length: the same graph
        assert compiled == [0] and saved == [solver.kept]  # kept once, after the call that compiled
        with torch._dynamo.config.patch(recompile_limit=1):
            with pytest.raises(FellBackToEager, match="compile: torch.compile fell back to eager"):
                solver(*solve_inputs(model, 2, 40), None, 1, 3.0)  # a second graph, past a limit of one


@pytest.mark.parametrize(
    ("precision", "flags"), [("bf16", "avx512_bf16 and amx_bf16"), ("fp16", "avx512_fp16 and amx_fp16")]
)
def test_cpu_half_precision_rows_skip_naming_the_missing_cpu_flags(pytester, monkeypatch, tmp_path, precision, flags):
    """Where the CPU has no native instructions for a half precision, its torch and compile rows skip saying which
    flags are missing; where it has them, the precision runs."""
    from zvperf.engine import device

    monkeypatch.setattr(device, "cpu_capabilities", lambda: {"architecture": "x86_64", "avx2": True})
    for name in ("torch", "compile"):
        with pytest.raises(BackendUnavailable, match=f"this CPU lacks {flags}"):
            check_runnable(get_backend(name), "cpu", precision)
    from tests.helpers import write_official_dir

    root = tmp_path / "weights"
    write_official_dir(tiny_weights("zipvoice_distill"), root / "zipvoice_distill")
    pytester.makepyfile(test_benchmarks=(CASE_DIRS[0].parents[2] / "test_benchmarks.py").read_text())
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--benchmark-only", "--zv-device=cpu", f"--zv-weights={root}",
        "--zv-models=zipvoice_distill", "--zv-steps=1", "--zv-backends=torch", f"--zv-precision={precision}",
        "--zv-rounds=1", "--zv-warmup=0", "-rs", "-k", "solver",
    )  # fmt: skip
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([f"*SKIPPED*this CPU lacks {flags}*"])
    monkeypatch.setattr(device, "cpu_capabilities", lambda: {"architecture": "x86_64", flags.split()[-1]: True})
    check_runnable(get_backend("torch"), "cpu", precision)


def test_torch_fp32_on_the_cpu_runs_its_linears_through_onednn_within_fp32_rounding():
    from zvperf.engine.onednn import OneDnnSolver, onednn_available

    if not onednn_available():
        pytest.skip("this torch has no oneDNN")
    model, _ = synthetic_model("zipvoice_distill", config=tiny_config())
    solver = get_backend("torch").prepare(model, "cpu", "fp32")
    assert isinstance(solver, OneDnnSolver)
    generator = torch.Generator().manual_seed(0)
    x0, text, speech = (torch.randn(1, 203, model.feat_dim, generator=generator) for _ in range(3))
    with torch.inference_mode():
        expected = model.solve(x0, text, speech, None, 4, 3.0)
        got = solver(x0, text, speech, None, 4, 3.0)
    assert solver.mode.packed, "no weight went through oneDNN"
    assert (got - expected).abs().max() <= 1e-5 * max(1.0, expected.abs().max())
    assert get_backend("torch").prepare(model, "cpu", "bf16") == model.solve  # bf16 linears already use oneDNN


def onnx_or_skip():
    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
        pytest.skip("onnx and onnxruntime are not installed")


@pytest.mark.parametrize("guided", [False, True], ids=["single", "cfg"])
def test_the_unmasked_graph_gives_the_masked_graphs_output_on_unpadded_input(guided):
    """Unpadded batches run a graph without the padding mask (nothing masked); padded ones keep the masked graph."""
    onnx_or_skip()
    import onnx
    import onnxruntime as ort

    model, _ = synthetic_model("zipvoice" if guided else "zipvoice_distill", config=tiny_config())
    masked = ort.InferenceSession(str(exported_step(model, guided)), providers=["CPUExecutionProvider"])
    unmasked_path = exported_step(model, guided, masked=False)
    unmasked = ort.InferenceSession(str(unmasked_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in unmasked.get_inputs()] == ["x", "constant", "conditioning", "coefficients"]
    ops = {node.op_type for node in onnx.load(str(unmasked_path)).graph.node}
    assert "Softplus" not in ops and {"Exp", "Log", "Where"} <= ops  # ORT's Softplus kernel is the slow one
    step = DecoderStep(model.fm_decoder, model.feat_dim, guided).eval()
    for batch, frames in [(1, 37), (2, 203)]:
        x, constant, _, conditioning, coefficients = example_inputs(model, guided, torch.float32, batch, frames)
        no_padding = torch.zeros(constant.shape[:2], dtype=torch.bool)
        (with_mask,) = masked.run(None, dict(zip([i.name for i in masked.get_inputs()], [
            t.numpy() for t in (x, constant, no_padding, conditioning, coefficients)], strict=True)))  # fmt: skip
        (without,) = unmasked.run(None, {"x": x.numpy(), "constant": constant.numpy(),
            "conditioning": conditioning.numpy(), "coefficients": coefficients.numpy()})  # fmt: skip
        scale = max(1.0, np.abs(with_mask).max())
        assert np.abs(without - with_mask).max() <= 1e-6 * scale
        with torch.inference_mode():
            expected = step(x, constant, None, conditioning, coefficients).numpy()
        assert np.abs(without - expected).max() <= 1e-5 * scale


def test_ort_solves_take_the_unmasked_graph_without_padding_and_the_masked_one_with_it():
    onnx_or_skip()
    model, _ = synthetic_model("zipvoice_distill", config=tiny_config())
    solver = get_backend("ort-cpu").prepare(model, "cpu", "fp32")
    generator = torch.Generator().manual_seed(0)
    x0, text, speech = (torch.randn(2, 97, model.feat_dim, generator=generator) for _ in range(3))
    padding = torch.zeros(2, 97, dtype=torch.bool)
    padding[1, 80:] = True
    with torch.inference_mode():
        for mask in (None, padding):
            expected = model.solve(x0, text, speech, mask, 2, 3.0)
            got = solver(x0, text, speech, mask, 2, 3.0)
            valid = torch.ones_like(expected, dtype=torch.bool) if mask is None else ~mask[..., None].expand_as(got)
            assert (got - expected)[valid].abs().max() <= 1e-5 * max(1.0, expected.abs().max())


def official_style_initialisation(model):
    """The layers of each decoder stack made identical copies of its first, as the official code initialises a
    model (a stack is built by copying one layer): the exporter then stores each shared weight once, behind
    Identity nodes."""
    for stack in model.fm_decoder.encoders:
        layers = getattr(stack, "encoder", stack).layers
        for layer in layers[1:]:
            layer.load_state_dict(layers[0].state_dict())
    return model


def test_int8_quantises_every_weight_product_of_an_official_style_initialised_model():
    onnx_or_skip()
    import onnx

    from zvperf.backends.ort import quantized_step
    from zvperf.engine.precision import TOLERANCES, relative_error

    model, _ = synthetic_model("zipvoice_distill", config=tiny_config())
    official_style_initialisation(model)
    source = onnx.load(str(exported_step(model, False, masked=False)))
    initializers = {t.name for t in source.graph.initializer}
    aliases = {n.output[0] for n in source.graph.node if n.op_type == "Identity" and n.input[0] in initializers}
    assert aliases, "the export deduplicated no weight: the test would not exercise the Identity inlining"
    weights = initializers | aliases
    weight_products = [n for n in source.graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in weights]
    quantized = onnx.load(str(quantized_step(model, False, masked=False)))
    ops = [n.op_type for n in quantized.graph.node]
    assert ops.count("MatMulInteger") == len(weight_products)
    assert "ConvInteger" not in ops and "Conv" in ops  # depthwise convolutions stay in float
    solver = get_backend("ort-int8").prepare(model, "cpu", "int8")
    generator = torch.Generator().manual_seed(0)
    x0, text, speech = (torch.randn(1, 203, model.feat_dim, generator=generator) for _ in range(3))
    with torch.inference_mode():
        error = relative_error(solver(x0, text, speech, None, 4, 3.0), model.solve(x0, text, speech, None, 4, 3.0))
    assert error <= TOLERANCES["int8"]["x1"]


def test_int8_weights_get_7_bits_on_a_cpu_whose_int8_products_saturate(monkeypatch):
    onnx_or_skip()
    import onnx
    from onnx import numpy_helper

    from zvperf.backends import ort as ort_backend

    model, _ = synthetic_model("zipvoice_distill", config=tiny_config())
    ranges = {}
    for saturates in (False, True):
        monkeypatch.setattr(ort_backend, "cpu_int8_saturates", lambda saturates=saturates: saturates)
        graph = onnx.load(str(ort_backend.quantized_step(model, False, masked=False))).graph
        weights = [numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
        ranges[saturates] = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
    assert ranges[False] == 127 and ranges[True] <= 64
