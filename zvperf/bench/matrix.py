"""The benchmark matrix: which model x steps x backend x precision (x length) combinations to time."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from zvperf.errors import ZvperfError


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
    """One timed configuration; its id reads like ``zipvoice_distill-4step-torch-fp16`` (``-1000f`` with a length)."""

    model: str
    num_step: int
    backend: str
    precision: str
    frames: int | None = None  # a fixed decoder length (prompt + speech), or None for the text's own

    @property
    def config(self) -> Config:
        return Config(self.model, self.backend, self.precision)

    @property
    def id(self) -> str:
        length = f"-{self.frames}f" if self.frames else ""
        return f"{self.model}-{self.num_step}step-{self.backend}-{self.precision}{length}"


@dataclasses.dataclass(frozen=True)
class Preset:
    steps: dict[str, tuple[int, ...]]  # model -> step counts
    backends: tuple[str, ...]
    precisions: tuple[str, ...]
    lengths: tuple[int | None, ...]
    warmup_rounds: int
    rounds: int
    cold_rounds: int


PRESETS: dict[str, Preset] = {
    # What a 2-core CPU finishes in a few minutes at full size (the distill rows in about three).
    "quick": Preset(
        steps={"zipvoice": (4,), "zipvoice_distill": (4, 2)},
        backends=("torch",),
        precisions=("fp32",),
        lengths=(None,),
        warmup_rounds=1,
        rounds=5,
        cold_rounds=1,
    ),
    # The optimization guide's rows.
    "guide": Preset(
        steps={"zipvoice": (16, 8, 4), "zipvoice_distill": (8, 4, 2)},
        backends=("torch",),
        precisions=("fp32",),
        lengths=(None,),
        warmup_rounds=3,
        rounds=10,
        cold_rounds=3,
    ),
    # Everything: more steps, every backend and precision, the length buckets of the TensorRT profile.
    "full": Preset(
        steps={"zipvoice": (16, 8, 4, 2), "zipvoice_distill": (8, 4, 2, 1)},
        backends=("torch",),
        precisions=("fp32", "fp16", "bf16"),
        lengths=(375, 1000, 1800, 3000),
        warmup_rounds=3,
        rounds=20,
        cold_rounds=3,
    ),
}


@dataclasses.dataclass(frozen=True)
class Matrix:
    combos: tuple[Combo, ...]
    configs: tuple[Config, ...]
    warmup_rounds: int
    rounds: int
    cold_rounds: int


def expand(
    preset_name: str,
    models: Sequence[str] | None = None,
    steps: Sequence[int] | None = None,
    backends: Sequence[str] | None = None,
    precisions: Sequence[str] | None = None,
    lengths: Sequence[int] | None = None,
) -> Matrix:
    """The preset's combinations, with any of its axes replaced by the given values."""
    if preset_name not in PRESETS:
        raise ZvperfError(f"--zv-matrix {preset_name!r} is not one of {', '.join(PRESETS)}.")
    preset = PRESETS[preset_name]
    chosen_models = list(models) if models else list(preset.steps)
    unknown = [m for m in chosen_models if m not in PRESETS["full"].steps]
    if unknown:
        raise ZvperfError(f"--zv-models: {unknown[0]!r} is not one of {', '.join(PRESETS['full'].steps)}.")
    if steps and any(s < 1 for s in steps):
        raise ZvperfError(f"--zv-steps: step counts must be positive, got {list(steps)}.")
    if lengths and any(n < 2 for n in lengths):
        raise ZvperfError(f"--zv-lengths: frame counts must be at least 2, got {list(lengths)}.")
    combos = [
        Combo(model, num_step, backend, precision, frames)
        for model in chosen_models
        for backend in (backends or preset.backends)
        for precision in (precisions or preset.precisions)
        for frames in (lengths or preset.lengths)
        for num_step in (steps or preset.steps.get(model, PRESETS["full"].steps[model]))
    ]
    configs = list(dict.fromkeys(c.config for c in combos))
    return Matrix(tuple(combos), tuple(configs), preset.warmup_rounds, preset.rounds, preset.cold_rounds)
