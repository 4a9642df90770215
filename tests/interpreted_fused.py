"""Checks of the fused kernels (zvperf.engine.fused_kernels) on CPU tensors, under Triton's interpreter.

tests/test_fused.py runs each check in a fresh process, ``python -m tests.interpreted_fused CHECK [ARGS]`` with
TRITON_INTERPRET=1 in its environment: triton.jit reads that variable when it defines the kernels, so it cannot be
switched on inside a test process that may already hold compiled kernels (and must not leak into one on a GPU
machine). A check fails with an assertion error; one that measures prints its figures as JSON on stdout.
"""

from __future__ import annotations

import contextlib
import copy
import json
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from tests.helpers import CASE_DIRS, tiny_config
from zvperf.engine.config import ModelConfig
from zvperf.engine.conformance import load_case, run_case
from zvperf.engine.fused import fused_kernels
from zvperf.engine.models import DecoderStep, SolvePlan, ZipVoice
from zvperf.engine.precision import TOLERANCES, dtype_of, relative_error
from zvperf.engine.weights import synthetic_model
from zvperf.engine.zipformer import AttentionWeights, BiasNorm, relative_position_table, swoosh_l, swoosh_r

PRECISIONS = ("fp32", "fp16", "bf16")
# fp32: the kernels compute the eager formulas in fp32, so only rounding differs (an ulp or two). Half precisions:
# one rounding of an fp32 value that may differ in its last bits, so an ulp of the dtype; Triton's interpreter
# also truncates fp32 to bf16 where GPUs round to nearest. The engine's own bound for a decoder evaluation covers both.
KERNEL_TOLERANCE = {"fp32": 1e-6, "fp16": TOLERANCES["fp16"]["fm_velocity"], "bf16": TOLERANCES["bf16"]["fm_velocity"]}


def fused(function: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
    with fused_kernels():
        return function(*args)


def kernels() -> None:
    """Each fused op against the engine's eager function, in every precision, on layouts the model gives them."""
    generator = torch.Generator().manual_seed(0)
    for precision in PRECISIONS:
        dtype, tolerance = dtype_of(precision), KERNEL_TOLERANCE[precision]
        # Both tails of the activations: softplus's linear branch (x - 4 > 20) and exp's underflow.
        x = (torch.randn(3, 37, 100, generator=generator) * 12).to(dtype)
        x[0, 0, :4] = torch.tensor([60.0, 24.5, -60.0, -200.0])
        for activation in (swoosh_l, swoosh_r):
            # Transposed as well: the convolution module hands SwooshR its output channels-first.
            for layout in (x, x.transpose(1, 2)):
                expected, got = activation(layout), fused(activation, layout)
                assert got.dtype == dtype and got.shape == expected.shape and got.stride() == expected.stride()
                error = relative_error(got, expected)
                assert error <= tolerance, f"{activation.__name__} {precision}: error {error:.2e} > {tolerance:.0e}"
        for channels in (64, 100, 192):  # 100 and 192 (the text encoder's) are not powers of 2
            norm = BiasNorm(channels)
            with torch.no_grad():
                norm.bias.normal_(generator=generator)
                norm.log_scale.fill_(0.3)
            norm = norm.to(dtype)
            rows = torch.randn(5, 7, channels, generator=generator) * 3
            large = (rows * 300).to(dtype)  # past 256: (x - bias)^2 overflows fp16
            assert large.abs().max() > 256
            if dtype == torch.float16:
                assert torch.isinf((large - norm.bias).pow(2)).any()
            for values in (rows.to(dtype), large):
                with torch.inference_mode():
                    expected, got = norm(values), fused(norm, values)
                assert got.dtype == dtype and torch.isfinite(got).all()
                error = relative_error(got, expected)
                assert error <= tolerance, f"BiasNorm({channels}) {precision}: error {error:.2e} > {tolerance:.0e}"
        for frames in (37, 100):  # rows of 64 and 128 keys, one past the block's end
            attention = AttentionWeights(64, 16, heads=3, query_head_dim=8, pos_head_dim=4).to(dtype)
            inputs = torch.randn(2, frames, 64, generator=generator).to(dtype)
            padded = torch.zeros(2, frames, dtype=torch.bool)
            padded[1, frames - 5 :] = True  # the second utterance 5 frames shorter
            table = relative_position_table(frames, 16, torch.device("cpu"))
            for mask in (None, padded):
                with torch.inference_mode():
                    expected, got = attention(inputs, table, mask), fused(attention, inputs, table, mask)
                assert got.dtype == dtype and got.shape == expected.shape == (2, 3, frames, frames)
                error = relative_error(got, expected)
                where = f"attention ({frames} frames, mask: {mask is not None}) {precision}"
                assert error <= tolerance, f"{where}: error {error:.2e} > {tolerance:.0e}"
                if mask is not None:
                    assert (got[1, :, :, frames - 5 :] == 0).all(), f"{where}: padded keys take a share"
    with fused_kernels():  # registered: the fake implementations agree with the kernels
        sample = torch.randn(2, 9, 100, generator=generator)
        for op in (torch.ops.zvperf.swoosh_l, torch.ops.zvperf.swoosh_r):
            torch.library.opcheck(op, (sample,), test_utils=("test_schema", "test_faketensor"))
            torch.library.opcheck(op, (sample.transpose(1, 2),), test_utils=("test_schema", "test_faketensor"))
        norm_args = (sample, torch.randn(100, generator=generator), torch.tensor(0.3))
        torch.library.opcheck(torch.ops.zvperf.bias_norm, norm_args, test_utils=("test_schema", "test_faketensor"))
        scores, relative = torch.randn(2, 3, 9, 9, generator=generator), torch.randn(2, 3, 9, 17, generator=generator)
        for mask in (None, torch.zeros(2, 9, dtype=torch.bool)):
            torch.library.opcheck(
                torch.ops.zvperf.relative_softmax, (scores, relative, mask, -1000.0),
                test_utils=("test_schema", "test_faketensor"),
            )  # fmt: skip


def conformance() -> None:
    """The bundled cases with the fused kernels switched on: text condition, one decoder evaluation, whole solve."""
    for case_dir in CASE_DIRS:
        with fused_kernels(), OpCounter() as counter:
            checks = run_case(load_case(case_dir))
        assert counter.fused, "the fused kernels did not run"
        for check in checks:
            assert check.passed, f"{case_dir.name} {check.name}: error {check.error:.2e} > {check.tolerance:.0e}"
        print(json.dumps({case_dir.name: {check.name: check.error for check in checks}}))


class OpCounter(TorchDispatchMode):
    """The operators a computation dispatches (a custom op is one, whatever it runs inside).

    ``computing`` leaves out views and conversions to the dtype a tensor already has (results that alias an input
    without writing it: no kernel); ``casts`` are the conversions that do change a dtype."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()
        self.aliases = 0
        self.casts = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        self.ops[func.name()] += 1
        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        outputs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        reads_only = all(r.alias_info is not None and not r.alias_info.is_write for r in func._schema.returns)
        storages = {t.untyped_storage()._cdata for t in inputs}
        if reads_only and outputs and all(t.untyped_storage()._cdata in storages for t in outputs):
            self.aliases += 1
        elif func.name() in ("aten::to.dtype", "aten::_to_copy") and inputs[0].dtype != outputs[0].dtype:
            self.casts += 1
        return out

    @property
    def fused(self) -> int:
        return sum(n for name, n in self.ops.items() if name.startswith("zvperf::"))

    def figures(self) -> dict[str, Any]:
        total = sum(self.ops.values())
        return {"ops": total, "computing": total - self.aliases, "casts": self.casts, "fused": self.fused}


def step_and_inputs(model: ZipVoice, precision: str, device: str, frames: int) -> tuple[DecoderStep, tuple]:
    """A copy of zipvoice_distill ``model``'s decoder step in ``precision`` on ``device``, as a 4-step solve at
    guidance 3 runs it after its first step (one utterance, no padding), and the inputs of its first step."""
    dtype = dtype_of(precision)
    generator = torch.Generator().manual_seed(0)
    model = copy.deepcopy(model).to(dtype)
    feat = model.feat_dim
    text, speech, x = (torch.randn(1, frames, feat, generator=generator).to(dtype) for _ in range(3))
    with torch.inference_mode():
        plan = SolvePlan(model, text, speech, None, 4, 3.0, 0.5)  # planned on the CPU: to_device leaves meta out
    model.to(device)  # in place: the step module shares its decoder
    inputs = tuple(t if t is None else t.to(device) for t in (x, *plan.step_inputs(0)))
    with torch.inference_mode():
        plan.step_module(*inputs)  # caches the relative position tables, as a solve's first step does for the rest
    return plan.step_module, inputs


def count(step: DecoderStep, inputs: tuple, with_fused: bool) -> tuple[OpCounter, torch.Tensor]:
    with fused_kernels() if with_fused else contextlib.nullcontext(), torch.inference_mode(), OpCounter() as counter:
        out = step(*inputs)
    return counter, out


def op_counts(size: str, frames: str) -> None:
    """Operators of one decoder step, eager and fused, per precision, counted on the meta device (no kernel runs, so
    the full size is quick). The ``tiny`` architecture (the conformance cases') is also run on the CPU, its kernels
    by the interpreter: its counts must be the meta device's, which is what lets meta counts of the ``full`` size
    (the released architecture, synthetic weights) stand for real ones, and its fused output must be the eager one's
    within the precision's tolerance."""
    model, _ = synthetic_model("zipvoice_distill", config=tiny_config() if size == "tiny" else ModelConfig())
    figures: dict[str, dict[str, Any]] = {}
    for precision in PRECISIONS:
        on_meta = step_and_inputs(model, precision, "meta", int(frames))
        on_cpu = step_and_inputs(model, precision, "cpu", int(frames)) if size == "tiny" else None
        row: dict[str, Any] = {}
        outputs = []
        for with_fused, name in ((False, "eager"), (True, "fused")):
            counter, _ = count(*on_meta, with_fused)
            row[name] = counter.figures()
            if on_cpu is not None:
                real, out = count(*on_cpu, with_fused)
                assert real.ops == counter.ops, f"{precision} {name}: the CPU and the meta device dispatch differently"
                outputs.append(out)
        if outputs:
            row["error"] = error = relative_error(*reversed(outputs))
            assert error <= TOLERANCES[precision]["fm_velocity"], f"{precision}: fused step off by {error:.2e}"
        figures[precision] = row
    print(json.dumps(figures))


def compiled() -> None:
    """torch.compile takes the fused ops (fullgraph: no graph break) and follows the switch: the graph it captures
    with the kernels switched on calls them, the one without does not, and each computes what the eager step does."""
    model, _ = synthetic_model("zipvoice_distill", config=tiny_config())
    step, inputs = step_and_inputs(model, "fp32", "cpu", 100)
    graphs: list[set[str]] = []

    def backend(graph: torch.fx.GraphModule, example_inputs: Any) -> Callable[..., Any]:
        graphs.append({str(node.target) for node in graph.graph.nodes})
        return graph.forward

    compiled_step = torch.compile(step, fullgraph=True, dynamic=True, backend=backend)
    for with_fused in (False, True):
        with fused_kernels() if with_fused else contextlib.nullcontext(), torch.inference_mode():
            error = relative_error(compiled_step(*inputs), step(*inputs))
        assert error <= 1e-6, f"compiled step (fused: {with_fused}) off by {error:.2e}"
    unfused, with_kernels = graphs
    ops = {"zvperf.swoosh_l", "zvperf.swoosh_r", "zvperf.bias_norm"}
    assert ops <= with_kernels and not ops & unfused


CHECKS: dict[str, Callable[..., None]] = {
    "kernels": kernels, "conformance": conformance, "op_counts": op_counts, "compiled": compiled,
}  # fmt: skip

if __name__ == "__main__":
    CHECKS[sys.argv[1]](*sys.argv[2:])
