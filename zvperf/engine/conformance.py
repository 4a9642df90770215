"""Conformance cases: reference inputs and outputs of the official models, and checking an engine against them.

A case folder holds ``model.json``, ``model.pt``, ``case.json`` and ``tensors.safetensors`` (see
``tests/data/conformance/README.md``). Checking runs the three computations the reference recorded —
the text condition, one decoder evaluation, and a whole Euler solve — and compares each on valid frames.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from zvperf.engine.checkpoint import load_checkpoint
from zvperf.engine.config import read_model_json
from zvperf.engine.models import ZipVoice, ZipVoiceDistill, speech_condition_from_prompt
from zvperf.engine.precision import TOLERANCES, dtype_of, relative_error, use_ieee_fp32
from zvperf.engine.solver import Solver
from zvperf.errors import ZvperfError
from zvperf.files import read_json

CASE_FILES = ("model.json", "model.pt", "case.json", "tensors.safetensors")
CASE_KEYS = (
    "model_name", "vocab_size", "pad_id", "tokens", "prompt_tokens", "prompt_frames", "speed",
    "num_step", "guidance_scale", "t_shift", "t_single", "num_frames", "features_lens",
)  # fmt: skip
TENSOR_NAMES = (
    "prompt_features", "text_condition", "padding_mask", "speech_condition", "fm_xt", "fm_velocity", "x0", "x1",
)  # fmt: skip
MODEL_CLASSES: dict[str, type[ZipVoice]] = {"zipvoice": ZipVoice, "zipvoice_distill": ZipVoiceDistill}


@dataclasses.dataclass
class Case:
    path: Path
    info: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    @property
    def valid(self) -> torch.Tensor:
        return self.tensors["padding_mask"] == 0

    def build_model(self) -> ZipVoice:
        """The case's model with its checkpoint loaded strictly, in eval mode on the CPU."""
        config, _ = read_model_json(self.path / "model.json")
        model = MODEL_CLASSES[self.info["model_name"]].from_config(
            config, vocab_size=self.info["vocab_size"], pad_id=self.info["pad_id"]
        )
        load_checkpoint(model, self.path / "model.pt")
        return model.eval()


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    error: float  # max |ours - reference| / max(1, max |reference|) on valid frames
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.error <= self.tolerance


def load_case(case_dir: Path | str) -> Case:
    """Read and validate a case folder; every problem is one sentence naming the file."""
    path = Path(case_dir)
    if not path.is_dir():
        raise ZvperfError(f"{path}: case folder not found.")
    for name in CASE_FILES:
        if not (path / name).is_file():
            raise ZvperfError(f"{path}: case folder has no {name}.")
    info = read_json(path / "case.json")
    if not isinstance(info, dict):
        raise ZvperfError(f"{path / 'case.json'}: expected a JSON object.")
    missing = [k for k in CASE_KEYS if k not in info]
    if missing:
        raise ZvperfError(f"{path / 'case.json'}: key {missing[0]!r} is missing.")
    if info["model_name"] not in MODEL_CLASSES:
        raise ZvperfError(
            f"{path / 'case.json'}: model_name {info['model_name']!r} is not one of {list(MODEL_CLASSES)}."
        )
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path / "tensors.safetensors"))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ZvperfError(f"{path / 'tensors.safetensors'}: not a readable safetensors file ({exc}).") from None
    absent = [n for n in TENSOR_NAMES if n not in tensors]
    if absent:
        raise ZvperfError(f"{path / 'tensors.safetensors'}: tensor {absent[0]!r} is missing.")
    batch, frames = len(info["tokens"]), info["num_frames"]
    for name in ("text_condition", "speech_condition", "fm_xt", "fm_velocity", "x0", "x1"):
        if tuple(tensors[name].shape[:2]) != (batch, frames):
            raise ZvperfError(
                f"{path / 'tensors.safetensors'}: tensor {name!r} has shape {list(tensors[name].shape)}, "
                f"expected [{batch}, {frames}, feat_dim]."
            )
    return Case(path, info, tensors)


# Builds the solver a case's whole solve runs through, from the loaded model: (model, device, precision).
SolverFactory = Callable[[ZipVoice, str, str], Solver]


def run_case(
    case: Case, device: str = "cpu", precision: str = "fp32", prepare: SolverFactory | None = None
) -> list[Check]:
    """Run the case's three computations and compare them with the reference.

    The text condition and the single decoder evaluation run in torch; the whole solve runs through the
    solver ``prepare`` builds for this model (a backend's ``prepare``; default: the model's own eager
    solve), which is how any backend is put through the reference vectors.
    """
    dtype = dtype_of(precision)
    use_ieee_fp32()
    model = case.build_model().to(device=device, dtype=dtype)
    solve = model.solve if prepare is None else prepare(model, device, precision)
    info, ref = case.info, case.tensors

    def put(name: str) -> torch.Tensor:
        return ref[name].to(device=device, dtype=dtype)

    mask = ref["padding_mask"].bool().to(device)
    tolerances = TOLERANCES[precision]
    with torch.inference_mode():
        cond = model.text_condition(info["tokens"], info["prompt_tokens"], info["prompt_frames"], info["speed"])
        if cond.features_lens != list(info["features_lens"]):
            raise ZvperfError(
                f"{case.path}: the duration rule gave {cond.features_lens} frames, "
                f"the reference {info['features_lens']}."
            )
        speech = speech_condition_from_prompt(put("prompt_features"), info["prompt_frames"], info["num_frames"])
        velocity = model.forward_fm_decoder(
            torch.tensor(info["t_single"], device=device),
            put("fm_xt"),
            put("text_condition"),
            speech,
            mask,
            torch.tensor(info["guidance_scale"], device=device),
        )
        x1 = solve(
            put("x0"), put("text_condition"), speech, mask, info["num_step"], info["guidance_scale"], info["t_shift"]
        )
    valid = case.valid
    return [
        Check(
            "text_condition", relative_error(cond.frames, ref["text_condition"], valid), tolerances["text_condition"]
        ),
        Check("fm_velocity", relative_error(velocity, ref["fm_velocity"], valid), tolerances["fm_velocity"]),
        Check("x1", relative_error(x1, ref["x1"], valid), tolerances["x1"]),
    ]
