"""The benchmark matrix: which model x steps x backend x precision (x length) combinations to time."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from zvperf.errors import ZvperfError
from zvperf.gate.stats import BASELINE_PROCESSES, JUDGED_PROCESSES
from zvperf.results.schema import KINDS

MIN_FRAMES = 16  # the shortest decoder input every backend takes (the TensorRT profile's lower end)


@dataclasses.dataclass(frozen=True)
class Config:
    """A built engine: everything but the step count and the input length."""

    model: str
    backend: str
    precision: str

    @property
    def id(self) -> str:
        return f"{self.model}-{self.backend}-{self.precision}"


@dataclasses.dataclass(frozen=True)
class Combo:
    """One timed configuration; its id reads like ``zipvoice_distill-4step-torch-fp16``, with ``-1000f`` for a
    fixed length and ``-b4`` for a batch of 4."""

    model: str
    num_step: int
    backend: str
    precision: str
    frames: int | None = None  # a fixed decoder length (prompt + speech), or None for the text's own
    batch: int = 1  # utterances solved together

    @property
    def config(self) -> Config:
        return Config(self.model, self.backend, self.precision)

    @property
    def utterance(self) -> Combo:
        """The same configuration on one utterance of the text's own length (what end-to-end runs)."""
        return Combo(self.model, self.num_step, self.backend, self.precision)

    @property
    def id(self) -> str:
        length = f"-{self.frames}f" if self.frames else ""
        batch = f"-b{self.batch}" if self.batch > 1 else ""
        return f"{self.model}-{self.num_step}step-{self.backend}-{self.precision}{length}{batch}"


def parse_combo(text: str) -> Combo:
    """The combination a benchmark id names (``zipvoice_distill-4step-ort-cpu-fp32-843f-b2``): the inverse of
    :attr:`Combo.id`."""
    from zvperf.backends import backend_names
    from zvperf.engine.precision import DTYPES

    pattern = (
        rf"(?P<model>{'|'.join(sorted(MODELS, key=len, reverse=True))})-(?P<steps>[0-9]+)step-"
        rf"(?P<backend>{'|'.join(backend_names())})-(?P<precision>{'|'.join(DTYPES)})"
        r"(?:-(?P<frames>[0-9]+)f)?(?:-b(?P<batch>[0-9]+))?"
    )
    match = re.fullmatch(pattern, text)
    if match is None or int(match["steps"]) < 1 or int(match["batch"] or 1) < 1:
        raise ZvperfError(
            f"{text!r} is not a configuration: expected MODEL-NSTEP-BACKEND-PRECISION[-FRAMESf][-bBATCH], "
            "like zipvoice_distill-4step-ort-cpu-fp32-843f."
        )
    frames = int(match["frames"]) if match["frames"] else None
    if frames is not None and frames < MIN_FRAMES:
        raise ZvperfError(f"{text!r}: {frames} frames is below the shortest decoder input, {MIN_FRAMES}.")
    batch = int(match["batch"] or 1)
    return Combo(match["model"], int(match["steps"]), match["backend"], match["precision"], frames, batch)


@dataclasses.dataclass(frozen=True)
class Stopping:
    """nvbench's noise criterion for a row: after the preset's rounds, it keeps timing rounds until the spread of
    its median (the half-width of the median's distribution-free 95% confidence interval, over the median) is at
    most ``precision``, or until it has timed for ``time_cap_s`` seconds or ``max_rounds`` rounds, and records
    which (zvperf.suite.timing)."""

    precision: float
    time_cap_s: float
    max_rounds: int = 50  # what a baseline entry stores (zvperf.gate.baselines.MAX_STORED_ROUNDS)


@dataclasses.dataclass(frozen=True)
class Preset:
    steps: dict[str, tuple[int, ...]]  # model -> step counts
    variants: tuple[tuple[str, str], ...] | None  # (backend, precision) pairs; None: every backend in each precision
    lengths: tuple[int | None, ...]
    batches: tuple[int, ...]
    warmup_rounds: int
    rounds: int  # fixed, or the first rounds of a row with a stopping rule (6 at least: the median's interval)
    cold_rounds: int
    kinds: tuple[str, ...] = KINDS  # the benchmarks it times (zvperf.results.schema.KINDS)
    stopping: Stopping | None = None  # None: exactly ``rounds`` rounds
    # Separate processes a gated run pools, and a baseline for it: the gate's test compares their medians
    # (zvperf.gate.stats.process_test), enough a side for its p to reach alpha.
    processes: int = 1
    baseline_processes: int = 1


PRESETS: dict[str, Preset] = {
    # What a 2-core CPU finishes in a few minutes at full size (the distill rows in about three).
    "quick": Preset(
        steps={"zipvoice": (4,), "zipvoice_distill": (4, 2)},
        variants=(("torch", "fp32"),),
        lengths=(None,),
        batches=(1,),
        warmup_rounds=1,
        rounds=5,
        cold_rounds=1,
    ),
    # The optimization guide's rows: the eager reference, half precision, CUDA graphs and TensorRT. bf16 is the
    # half precision CPUs with avx512_bf16 or AMX run natively (fp16 rows skip on CPUs without avx512_fp16).
    "guide": Preset(
        steps={"zipvoice": (16, 8, 4), "zipvoice_distill": (8, 4, 2)},
        variants=(("torch", "fp32"), ("torch", "fp16"), ("torch", "bf16"), ("cudagraph", "fp16"), ("trt", "fp16")),
        lengths=(None,),
        batches=(1,),
        warmup_rounds=3,
        rounds=10,
        cold_rounds=3,
    ),
    # Everything: more steps, every backend and precision, the length buckets of the TensorRT profile.
    "full": Preset(
        steps={"zipvoice": (16, 8, 4, 2), "zipvoice_distill": (8, 4, 2, 1)},
        variants=None,
        lengths=(375, 1000, 1800, 3000),
        batches=(1, 4),
        warmup_rounds=3,
        rounds=20,
        cold_rounds=3,
    ),
}

# What a pull request needs judged (docs/gate.md, *The gate matrix*), per device: each model on the fastest path the
# guide's report found for it there, with its end-to-end, text-encoder and vocoder rows (cold starts, seconds a
# round, stay with the guide matrix on main). Rows run until their median is known to the stopping rule's
# precision or its time cap. The gate's test compares the medians of separate processes (zvperf.gate.stats): three
# judged ones against a baseline of eight, whose exact test reaches p = 1/165 (a slowdown of every row passes
# alpha after the adjustment over them; one row's alone goes to the A/B confirmation's six processes a side).
_GATE_KINDS = ("solver", "e2e", "text_encoder", "vocoder")
GATE_PRESETS: dict[str, Preset] = {
    # CUDA graphs, not launch-bound eager rows (reports/nvidia-h100-80gb-hbm3: 2.1x and 4.3x faster than eager fp16,
    # IQR 0.3% and 0.5% of the median against eager's 2.1% and 3.9%), and TensorRT where installed (else its rows skip);
    # zipvoice at 16 steps (the guide's quality row), zipvoice_distill at 4 (its balance row), as measured there.
    "cuda": Preset(
        steps={"zipvoice": (16,), "zipvoice_distill": (4,)},
        variants=(("cudagraph", "fp16"), ("trt", "fp16")),
        lengths=(1800,),
        batches=(1,),
        warmup_rounds=3,
        rounds=6,
        cold_rounds=0,
        kinds=_GATE_KINDS,
        stopping=Stopping(precision=0.01, time_cap_s=6),
        processes=JUDGED_PROCESSES,
        baseline_processes=BASELINE_PROCESSES,
    ),
    # zipvoice at 4 steps (the CPU guide's fastest row of it) and zipvoice_distill at 4 (its balance row, as on
    # CUDA): torch in bf16 where the CPU runs it natively (else those rows skip, saying so) and in fp32; a 2-core
    # machine's rounds spread 1-4% of the median quiet, more under load, its full-size processes about 4%
    # (docs/calibration.md).
    "cpu": Preset(
        steps={"zipvoice": (4,), "zipvoice_distill": (4,)},
        variants=(("torch", "fp32"), ("torch", "bf16")),
        lengths=(None,),
        batches=(1,),
        warmup_rounds=2,
        rounds=6,
        cold_rounds=0,
        kinds=_GATE_KINDS,
        stopping=Stopping(precision=0.02, time_cap_s=60),
        processes=JUDGED_PROCESSES,
        baseline_processes=BASELINE_PROCESSES,
    ),
}
PRESET_NAMES = (*PRESETS, "gate")


def preset(name: str, device: str) -> Preset:
    """The named preset (``gate``: the device's own)."""
    if name == "gate":
        return GATE_PRESETS[device]
    if name not in PRESETS:
        raise ZvperfError(f"--zv-matrix {name!r} is not one of {', '.join(PRESET_NAMES)}.")
    return PRESETS[name]


MODELS = tuple(PRESETS["full"].steps)


@dataclasses.dataclass(frozen=True)
class Matrix:
    combos: tuple[Combo, ...]  # what the solver benchmark times
    utterances: tuple[Combo, ...]  # what end-to-end synthesis times: one utterance, the text's own length
    configs: tuple[Config, ...]  # what is built: the component and cold-start benchmarks' rows
    warmup_rounds: int
    rounds: int
    cold_rounds: int
    kinds: tuple[str, ...] = KINDS
    stopping: Stopping | None = None


# The rows of a named ZipVoice checkout (--zv-zipvoice) added to a preset's, per device: every path the official
# code ships there (its PyTorch inference, its ONNX export on the CPU, its TensorRT engine on CUDA), where zvperf has
# a backend for it.
CHECKOUT_VARIANTS = {
    "cpu": (("official", "fp32"), ("official-onnx", "fp32"), ("official-onnx", "int8")),
    "cuda": (("official", "fp32"), ("official-trt", "fp16")),
}


def _variants(
    preset: Preset, backends: Sequence[str] | None, precisions: Sequence[str] | None
) -> list[tuple[str, str]]:
    """The preset's (backend, precision) pairs, or the product of the axes given on the command line.

    Backends named without precisions run in those of the preset they support, else in their first
    (ort-int8 in int8); precisions named explicitly are taken as asked (unsupported ones skip, saying so).
    """
    from zvperf.backends import backend_names, get_backend

    if preset.variants is None:
        pairs = [(name, precision) for name in backend_names() for precision in get_backend(name).precisions]
    else:
        pairs = list(preset.variants)
    if not backends and not precisions:
        return pairs
    chosen_precisions = list(precisions or dict.fromkeys(p for _, p in pairs))
    out = []
    for backend in backends or dict.fromkeys(b for b, _ in pairs):
        supported = get_backend(backend).precisions
        usable = chosen_precisions if precisions else [p for p in chosen_precisions if p in supported]
        out += [(backend, p) for p in usable or supported[:1]]
    return out


def expand(
    preset_name: str,
    models: Sequence[str] | None = None,
    steps: Sequence[int] | None = None,
    backends: Sequence[str] | None = None,
    precisions: Sequence[str] | None = None,
    lengths: Sequence[int] | None = None,
    batches: Sequence[int] | None = None,
    checkout_device: str | None = None,
    device: str = "cpu",
) -> Matrix:
    """The preset's combinations on ``device``, with any of its axes replaced by the given values; with
    ``checkout_device`` (a ZipVoice checkout was named) and no backends given, the checkout's rows for that device
    beside them."""
    chosen = preset(preset_name, device)
    chosen_models = list(models) if models else list(chosen.steps)
    unknown = [m for m in chosen_models if m not in MODELS]
    if unknown:
        raise ZvperfError(f"--zv-models: {unknown[0]!r} is not one of {', '.join(MODELS)}.")
    variants = _variants(chosen, backends, precisions)
    if checkout_device and not backends:
        from zvperf.backends import backend_names

        known = backend_names()
        variants += [v for v in CHECKOUT_VARIANTS[checkout_device] if v[0] in known and v not in variants]
    combos = [
        Combo(model, num_step, backend, precision, frames, batch)
        for model in chosen_models
        for backend, precision in variants
        for frames in (lengths or chosen.lengths)
        for batch in (batches or chosen.batches)
        for num_step in (steps or chosen.steps.get(model, PRESETS["full"].steps[model]))
    ]
    utterances = dict.fromkeys(c.utterance for c in combos)
    configs = dict.fromkeys(c.config for c in combos)
    return Matrix(
        tuple(combos),
        tuple(utterances),
        tuple(configs),
        chosen.warmup_rounds,
        chosen.rounds,
        chosen.cold_rounds,
        chosen.kinds,
        chosen.stopping,
    )
