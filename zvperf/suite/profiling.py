"""Where one solve's time goes, by operator: torch's profiler for the torch backends (torch, compile, cudagraph,
fused, fused-graph, official), ONNX Runtime's own profiler for the ONNX Runtime backends.

The configuration is built and verified as the benchmarks build it (zvperf.suite.engines.Engine), warmed up by
one solve, then one more solve is profiled. Each operator's time is its self time (torch: the operator's own
time without the operators it calls, on the CPU or, in a CUDA run, on the device; ONNX Runtime: its kernel
time), its share is of all operators' time, and its FLOP rate is given where its FLOPs are known: torch's
counts for its matrix products (and the matrix products of oneDNN's packed linears, from their shapes);
ONNX Runtime's matrix products (float and int8) and convolutions, from the shapes it records.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from zvperf.backends import get_backend
from zvperf.backends.checkout import selected
from zvperf.backends.ort import OrtBackend, profiled_sessions
from zvperf.engine import audio
from zvperf.engine.device import synchronize
from zvperf.errors import ZvperfError
from zvperf.results.summary import format_table, gflops
from zvperf.suite.engines import Engine, VerificationError
from zvperf.suite.matrix import Combo, expand
from zvperf.suite.options import BenchOptions

# ONNX Runtime operators that are matrix products: 2 x (output elements) x (the first input's last dimension).
_ORT_PRODUCTS = {"MatMul", "FusedMatMul", "Gemm", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"}
_TORCH_PACKED_LINEAR = "mkldnn::_linear_pointwise"
# torch operators whose FLOPs its profiler counts and that are matrix products (it counts elementwise ones too).
_TORCH_PRODUCTS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}


# Device kernels by what they do, from their names (the first class whose word a name contains, else
# elementwise): cuBLAS and CUTLASS products, attention kernels, cuDNN or PyTorch convolutions, reductions (softmax,
# norms, means), copies and dtype casts (PyTorch's copy kernels), and the rest (PyTorch's and Triton's pointwise).
KERNEL_CLASSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("matrix products", ("gemm", "cutlass", "xmma", "cublas", "wgmma", "matmul")),
    ("attention", ("flash", "fmha", "attention")),
    ("convolution", ("conv",)),
    ("norm, softmax, reduction", ("softmax", "norm", "reduce", "triton_red", "triton_per")),
    ("copies and casts", ("copy", "memcpy", "memset", "cat_", "catarray")),
)
ELEMENTWISE = "elementwise"


def kernel_class(name: str) -> str:
    lowered = name.lower()
    return next((cls for cls, words in KERNEL_CLASSES if any(w in lowered for w in words)), ELEMENTWISE)


@dataclasses.dataclass
class KernelClass:
    name: str
    kernels: int = 0
    seconds: float = 0.0


def kernel_classes(kernels: Iterable[tuple[str, float]]) -> list[KernelClass]:
    """(kernel name, device seconds) pairs summed by class, in KERNEL_CLASSES' order, elementwise last."""
    found = {cls: KernelClass(cls) for cls in [*(c for c, _ in KERNEL_CLASSES), ELEMENTWISE]}
    for name, seconds in kernels:
        entry = found[kernel_class(name)]
        entry.kernels += 1
        entry.seconds += seconds
    return [entry for entry in found.values() if entry.kernels]


@dataclasses.dataclass
class OperatorTime:
    name: str
    calls: int = 0
    seconds: float = 0.0
    flops: float | None = None  # None: not known for this operator

    def add(self, seconds: float, flops: float | None) -> None:
        self.calls += 1
        self.seconds += seconds
        if flops is not None:
            self.flops = (self.flops or 0.0) + flops


@dataclasses.dataclass
class Profile:
    combo: Combo
    device: str
    profiler: str
    solve_seconds: float  # wall time of the profiled solve (the profiler's overhead included)
    operators: list[OperatorTime]
    kernels: list[KernelClass] = dataclasses.field(default_factory=list)  # a CUDA run's device kernels by class
    evaluations: int = 1  # decoder evaluations in the solve (a doubled CFG batch counts once: one step's kernels)

    @property
    def total(self) -> float:
        return sum(op.seconds for op in self.operators)

    def lines(self, top: int) -> list[str]:
        """The header and a table of the ``top`` operators by time, the rest summed in one line."""
        ranked = sorted(self.operators, key=lambda op: op.seconds, reverse=True)
        shown, rest = ranked[:top], ranked[top:]
        total = self.total or math.inf
        table = [
            {
                "operator": op.name,
                "calls": str(op.calls),
                "ms": f"{op.seconds * 1e3:.1f}",
                "share": f"{op.seconds / total:.1%}",
                "GFLOP/s": gflops(op.flops / op.seconds if op.flops and op.seconds else None),
            }
            for op in shown
        ]
        if rest:
            seconds = sum(op.seconds for op in rest)
            table.append(
                {
                    "operator": f"({len(rest)} other operators)",
                    "calls": str(sum(op.calls for op in rest)),
                    "ms": f"{seconds * 1e3:.1f}",
                    "share": f"{seconds / total:.1%}",
                    "GFLOP/s": "-",
                }
            )
        header = (
            f"{self.combo.id} on {self.device}"
            + (f" ({torch.get_num_threads()} threads)" if self.device == "cpu" else "")
            + f": one solve of {self.combo.num_step} steps took {self.solve_seconds:.3f} s under {self.profiler}, "
            f"{self.total:.3f} s of it in operators (self time)"
        )
        return [header, *format_table(table, left=("operator",)), *self.kernel_lines()]

    def kernel_lines(self) -> list[str]:
        """On CUDA: the device kernels per decoder step by class, with their share of the kernels' time."""
        if not self.kernels:
            return []
        count = sum(k.kernels for k in self.kernels)
        seconds = sum(k.seconds for k in self.kernels) or math.inf
        table = [
            {
                "kernel class": k.name,
                "per step": f"{k.kernels / self.evaluations:.0f}",
                "ms per step": f"{k.seconds / self.evaluations * 1e3:.2f}",
                "share": f"{k.seconds / seconds:.1%}",
            }
            for k in self.kernels
        ]
        header = f"device kernels: {count} in the solve, {count / self.evaluations:.0f} per decoder step"
        return ["", header, *format_table(table, left=("kernel class",))]


def _options(combo: Combo, device: str, weights: str) -> BenchOptions:
    """Benchmark options for building exactly ``combo`` (the suite's defaults otherwise)."""
    matrix = expand("quick", [combo.model], [combo.num_step], [combo.backend], [combo.precision])
    return BenchOptions(
        matrix_name="profile",
        matrix=matrix,
        device=device,
        device_problem=None,
        weights=weights,
        text=audio.DEMO_TEXT,
        prompt_wav=audio.DEMO_PROMPT_WAV,
        prompt_text=audio.DEMO_PROMPT_TEXT,
        rounds=1,
        warmup_rounds=1,
        cold_rounds=1,
        stopping=None,
        slowdown=0.0,
        shard=(0, 1),
        zipvoice=selected(),
    )


def profile_solve(combo: Combo, device: str, weights: str = "auto") -> Profile:
    """Build ``combo`` as the benchmarks do, verify and warm it up, and profile one solve."""
    engine = Engine(combo.config, _options(combo, device, weights))
    try:
        engine.verify(combo.frames, combo.batch, combo.num_step)  # also the first (warm-up) solve
    except VerificationError as exc:
        raise ZvperfError(f"{exc}.") from None
    inputs = engine.solver_inputs(combo.frames, combo.batch)

    def solve() -> float:
        synchronize(device)
        start = time.perf_counter()
        with torch.inference_mode():
            engine.solve(inputs, combo.num_step)
        synchronize(device)
        return time.perf_counter() - start

    backend = get_backend(combo.backend)
    if isinstance(backend, OrtBackend):
        return _ort_profile(combo, device, engine, backend, solve)
    steps = len(engine.model.plan(combo.num_step, engine.model.default_guidance_scale, 0.5))
    return _torch_profile(combo, device, solve, steps)


def _torch_profile(combo: Combo, device: str, solve: Callable[[], float], steps: int) -> Profile:
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    solve()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities, record_shapes=True, with_flops=True) as profiler:
        seconds = solve()
    operators: dict[str, OperatorTime] = {}
    kernels = []
    for event in profiler.events():
        if event.device_type == DeviceType.CUDA:  # a kernel (or a device copy) itself, not an operator
            kernels.append((event.name, event.device_time_total / 1e6))
            continue
        own = event.self_device_time_total if device == "cuda" else event.self_cpu_time_total
        operators.setdefault(event.name, OperatorTime(event.name)).add(own / 1e6, _torch_flops(event))
    found = [op for op in operators.values() if op.seconds > 0]
    return Profile(combo, device, "torch.profiler", seconds, found, kernel_classes(kernels), steps)


def _torch_flops(event: Any) -> float | None:
    if event.name == _TORCH_PACKED_LINEAR and len(event.input_shapes) >= 2 and event.input_shapes[1]:
        x, weight = event.input_shapes[0], event.input_shapes[1]
        return 2.0 * math.prod(x) * weight[0]
    return float(event.flops) if event.name in _TORCH_PRODUCTS and event.flops else None


def _ort_profile(combo: Combo, device: str, engine: Engine, backend: OrtBackend, solve: Callable[[], float]) -> Profile:
    with tempfile.TemporaryDirectory(prefix="zvperf-profile-") as folder:
        with profiled_sessions(Path(folder)) as sessions:
            engine.synthesizer.solver = backend.prepare(engine.model, device, combo.precision)
            solve()  # the same runs as the profiled solve: the second half of each session's runs is kept
            seconds = solve()
        events = [json.loads(Path(session.end_profiling()).read_text()) for session in sessions]
    operators: dict[str, OperatorTime] = {}
    for profile_events in events:
        for name, microseconds, flops in _ort_kernels(profile_events):
            operators.setdefault(name, OperatorTime(name)).add(microseconds / 1e6, flops)
    return Profile(combo, device, "ONNX Runtime's profiler", seconds, list(operators.values()))


def _ort_kernels(events: Iterable[dict[str, Any]]) -> list[tuple[str, float, float | None]]:
    """(operator type, kernel microseconds, FLOPs or None) of every node run in the second half of a session's
    runs (the first half was the warm-up solve)."""
    events = list(events)
    runs = sorted(
        (e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e["name"] == "model_run"
    )
    kept = runs[len(runs) // 2 :]
    found = []
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        if not any(start <= event["ts"] <= end for start, end in kept):
            continue
        args = event.get("args", {})
        found.append((args.get("op_name", "?"), float(event["dur"]), _ort_flops(args)))
    return found


def _shapes(entries: list[dict[str, list[int]]]) -> list[list[int]]:
    return [next(iter(entry.values())) for entry in entries]


def _ort_flops(args: dict[str, Any]) -> float | None:
    try:
        inputs, outputs = _shapes(args["input_type_shape"]), _shapes(args["output_type_shape"])
    except (KeyError, StopIteration, AttributeError):
        return None
    op = args.get("op_name")
    if op in _ORT_PRODUCTS and inputs and outputs:
        return 2.0 * math.prod(outputs[0]) * inputs[0][-1]
    if op == "Conv" and len(inputs) >= 2 and outputs:
        return 2.0 * math.prod(outputs[0]) * math.prod(inputs[1][1:])
    return None
