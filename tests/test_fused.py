"""The fused kernels and their backends on a machine without a GPU: the kernels run under Triton's interpreter in
fresh processes (tests/interpreted_fused.py says why), the switch and the backends in this one."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import CASE_DIRS, WAIT_S, tiny_config
from zvperf.backends import get_backend
from zvperf.backends.cuda_graph import CudaGraphs
from zvperf.backends.fused import FusedSolver
from zvperf.engine import fused
from zvperf.engine.precision import TOLERANCES
from zvperf.engine.weights import synthetic_model
from zvperf.errors import ZvperfError

ROOT = Path(__file__).parents[1]
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")


def interpreted(check: str, *args: str) -> list[Any]:
    """Run ``check`` of tests/interpreted_fused.py in a fresh process under Triton's interpreter; the JSON lines it
    printed. Its assertion, if one failed, is the failure's message."""
    completed = subprocess.run(
        [sys.executable, "-m", "tests.interpreted_fused", check, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,  # python -m puts it first on the path: this checkout's tests and zvperf
        env={**os.environ, "TRITON_INTERPRET": "1"},
        timeout=5 * WAIT_S,  # bounds a hang only
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]


@needs_triton
def test_each_fused_kernel_computes_what_the_eager_function_does():
    """SwooshL, SwooshR (contiguous and transposed) and BiasNorm (64, 100 and 192 channels, values past 256) in
    fp32, fp16 and bf16, and the ops' fake implementations (torch.library.opcheck)."""
    interpreted("kernels")


@needs_triton
def test_the_decoder_with_fused_kernels_passes_the_conformance_cases():
    reported = {name: errors for line in interpreted("conformance") for name, errors in line.items()}
    assert sorted(reported) == [case.name for case in CASE_DIRS]
    for errors in reported.values():
        assert errors["fm_velocity"] <= TOLERANCES["fp32"]["fm_velocity"] and errors["x1"] <= TOLERANCES["fp32"]["x1"]


def assert_fewer_operators(size: str, frames: int, record_property: Any) -> None:
    (figures,) = interpreted("op_counts", size, str(frames))
    print(f"\noperators of one decoder step, {size} architecture, {frames} frames: {json.dumps(figures, indent=1)}")
    record_property(f"op_counts_{size}", figures)
    for precision, row in figures.items():
        eager, with_kernels = row["eager"], row["fused"]
        assert eager["fused"] == 0 and with_kernels["fused"] > 0, precision
        assert with_kernels["ops"] < eager["ops"] and with_kernels["computing"] < eager["computing"], precision
        assert with_kernels["casts"] <= eager["casts"], precision
    assert figures["fp16"]["fused"]["casts"] < figures["fp16"]["eager"]["casts"]


@needs_triton
def test_the_fused_step_dispatches_fewer_operators(record_property):
    """Counted the same way on both (a custom op is one operator), on the tiny architecture, in every precision;
    the interpreter also runs both steps, whose outputs agree."""
    assert_fewer_operators("tiny", 100, record_property)


@pytest.mark.slow
@needs_triton
def test_the_full_size_fused_step_dispatches_fewer_operators(record_property):
    """The released architecture at 1800 frames (the H100 profile's length), counted on the meta device; the figures
    are in docs/backends.md."""
    assert_fewer_operators("full", 1800, record_property)


@pytest.mark.slow
@needs_triton
def test_torch_compile_takes_the_fused_ops_and_follows_the_switch():
    interpreted("compiled")


@needs_triton
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="the interpreter compiles nothing")
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_the_kernels_compile_for_an_h100_and_an_a100(precision):
    """What can be checked of the CUDA path without a GPU: Triton compiles each kernel, as the ops launch it, down to
    a cubin for sm_90 and sm_80 (its own ptxas; no device needed). The interpreter accepts code that the compiler
    refuses (a global that is not a constexpr, a libdevice function)."""
    from triton import compile as triton_compile
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from zvperf.engine import fused_kernels

    def source(kernel: Any, constexprs: dict[str, Any], kinds: dict[str, str] | None = None) -> ASTSource:
        # Pointers to the precision's dtype, 32-bit integer sizes, and the constants, unless ``kinds`` says.
        inferred = {name: "constexpr" if name in constexprs else "i32" for name in kernel.arg_names}
        inferred |= {name: "*" + precision for name in kernel.arg_names if name.endswith("_ptr")}
        return ASTSource(kernel, inferred | (kinds or {}), constexprs=constexprs)

    swoosh = source(fused_kernels._swoosh_kernel, {"SHIFT": 4.0, "OFFSET": 0.035, "BLOCK": 1024})
    norm = source(fused_kernels._bias_norm_kernel, {"ROWS": 8, "BLOCK": 256})  # the text encoder's 192 channels
    # 1800 frames: one row of 2048 a program; with and without the padding mask (bool).
    attention = [
        source(
            fused_kernels._relative_softmax_kernel,
            {"HAS_MASK": has_mask, "ROWS": 1, "BLOCK": 2048},
            {"mask_ptr": "*i1", "masked_score": "fp32"},
        )
        for has_mask in (False, True)
    ]
    for capability in (90, 80):
        for source in (swoosh, norm, *attention):
            assert triton_compile(source, target=GPUTarget("cuda", capability, 32)).asm["cubin"]


def test_without_triton_the_kernels_and_their_backends_say_so(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "triton" else real(name, *a))
    reason = "the fused kernels need triton, which is not installed"
    assert fused.unavailable().startswith(reason)
    with pytest.raises(ZvperfError, match=reason):
        with fused.fused_kernels():
            pass
    assert not fused.active()
    for name in ("fused", "fused-graph"):
        assert get_backend(name).unavailable("cuda", "fp16").startswith(reason)


def test_the_fused_backends_solve_with_the_torch_and_cudagraph_solvers_switched_on():
    model, _ = synthetic_model("zipvoice_distill", config=tiny_config())
    solver = get_backend("fused").prepare(model, "cuda", "fp16")  # torch's solver on CUDA: the model's own solve
    assert isinstance(solver, FusedSolver) and solver.inner == model.solve
    assert get_backend("fused-graph").precisions == CudaGraphs().precisions


@needs_triton
def test_a_fused_solver_switches_the_kernels_on_for_its_calls_alone():
    solver = FusedSolver(lambda *args, **kwargs: torch.tensor(fused.active()))
    assert not fused.active()
    assert bool(solver()) and not fused.active()


@needs_triton
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="the interpreter runs the kernels on the CPU")
def test_on_cpu_tensors_outside_the_interpreter_the_kernels_refuse_in_one_sentence():
    with fused.fused_kernels(), pytest.raises(ZvperfError, match=r"CUDA tensors \(or under TRITON_INTERPRET=1\), not"):
        fused.swoosh_l(torch.ones(4))
