"""official-trt: the checkout's own TensorRT path on CUDA, fp16.

Its ``tensorrt_export`` (run as its CLI, the environment fixes applied) builds the decoder's engine once into
zvperf's cache, per checkout, model folder, GPU and TensorRT version; its ``load_trt`` puts the engine in place of
the PyTorch decoder, as its inference script's ``--trt-engine-path`` does; its rows then time its solver's
``sample``, its ``generate_sentence`` and its inference script as a fresh process. The text encoder and the vocoder
stay the PyTorch ones of the ``official`` row, which times them.

Unproven: written where there is neither a GPU nor tensorrt, so only its skip and its imports are tested.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from zvperf.backends import BackendUnavailable
from zvperf.backends.checkout import Checkout, CheckoutError
from zvperf.backends.official import (
    OfficialRun,
    checkout_path_unavailable,
    checkout_to_run,
    folder_digest,
    model_folder,
    run_official_script,
)
from zvperf.engine.models import ZipVoice
from zvperf.engine.solver import SolverInputs
from zvperf.files import build_once, cache_dir

EXPORT = "zipvoice.bin.tensorrt_export"
ENGINE_FILE = "fm_decoder.fp16.plan"
MAX_BATCH = 4  # its export's default: decoder rows per call (two per utterance where guidance doubles them)


def built_engine(checkout: Checkout, model_name: str, model_dir: Path) -> Path:
    """The checkout's fp16 TensorRT engine of ``model_dir``'s decoder, built on first use for this GPU and
    TensorRT."""
    version = importlib.import_module("tensorrt").__version__
    gpu = torch.cuda.get_device_name().replace(" ", "_")
    name = f"{model_name}-{folder_digest(model_dir)}-{checkout.cache_key}-{gpu}-trt{version}-b{MAX_BATCH}"
    plan = cache_dir() / "official-trt" / name / ENGINE_FILE
    return build_once(plan, lambda: _build(checkout, model_name, model_dir, plan))


def export_args(model_name: str, model_dir: Path, folder: Path, engine_name: str) -> list[str]:
    """Its export's command line: the engine ``folder / engine_name`` (and the ONNX file it builds from, beside)."""
    checkpoint = next((n for n in ("model.pt", "model.safetensors") if (model_dir / n).is_file()), "model.pt")
    return [
        "--tensorrt-model-dir", str(folder), "--model-name", model_name, "--model-dir", str(model_dir),
        "--checkpoint-name", checkpoint, "--trt-engine-file-name", engine_name, "--max-batch-size", str(MAX_BATCH),
    ]  # fmt: skip


def _build(checkout: Checkout, model_name: str, model_dir: Path, plan: Path) -> None:
    # It writes the engine under the name it is given: a temporary one, renamed once whole.
    building = plan.with_name(f"{plan.name}.building")
    args = export_args(model_name, model_dir, plan.parent, building.name)
    run_official_script(checkout, EXPORT, args, f"to build a TensorRT engine of {model_dir}")
    if not building.is_file() or building.stat().st_size == 0:
        raise CheckoutError(
            f"the ZipVoice checkout {checkout.path} ({checkout.label}) built no TensorRT engine of {model_dir}."
        )
    os.replace(building, plan)


class OfficialTrtRun(OfficialRun):
    """Its PyTorch model with the decoder replaced by its TensorRT engine (its ``load_trt``)."""

    not_its_own = {
        kind: f"the official TensorRT path replaces the decoder only: its {what} is the PyTorch one the official row "
        "times"
        for kind, what in (("text_encoder", "text encoder"), ("vocoder", "vocoder"))
    }

    def __init__(self, checkout: Checkout, model_name: str, model_dir: Path, vocoder_dir: Path, device: str,
                 plan: Path) -> None:  # fmt: skip
        self.plan = plan
        super().__init__(checkout, model_name, model_dir, vocoder_dir, device)

    def load_model(self) -> None:
        super().load_model()
        self.infer.load_trt(self.model, str(self.plan))  # as its inference script does with --trt-engine-path
        shapes = self.model.fm_decoder.trt_engine.get_tensor_profile_shape("x", 0)  # (min, opt, max) of x
        self.profile = [tuple(shape) for shape in shapes]

    def facts(self) -> dict[str, Any]:
        return {**self.checkout.facts(), "trt_engine": str(self.plan)}

    def solve_call(self, inputs: SolverInputs, num_step: int, guidance_scale: float) -> Callable[[], Tensor]:
        guided = self.model_name == "zipvoice" and guidance_scale != 0  # its guidance doubles the rows
        rows = inputs.batch * (2 if guided else 1)
        low, high = self.profile[0], self.profile[-1]
        if not (low[0] <= rows <= high[0] and low[1] <= inputs.frames <= high[1]):
            raise BackendUnavailable(
                f"{rows} decoder rows of {inputs.frames} frames are outside the official TensorRT engine's profile "
                f"(rows {low[0]}-{high[0]}, frames {low[1]}-{high[1]})"
            )
        return super().solve_call(inputs, num_step, guidance_scale)

    def cli_model_options(self) -> list[str]:
        return [*super().cli_model_options(), "--trt-engine-path", str(self.plan)]


class OfficialTrt:
    name = "official-trt"
    precisions = ("fp16",)
    devices = ("cuda",)
    runs_checkout = True
    own_allocator = True  # the engine's memory is TensorRT's

    def unavailable(self, device: str, precision: str) -> str | None:
        """The want of a checkout, or of tensorrt and onnx (its export writes ONNX, then builds from it)."""
        return checkout_path_unavailable("TensorRT", ("tensorrt", "onnx"), "gpu")

    def load(self, model_name: str, weights: str, device: str, precision: str) -> OfficialTrtRun:
        checkout = checkout_to_run()
        model_dir, vocoder_dir = model_folder(model_name, weights)
        plan = built_engine(checkout, model_name, model_dir)  # once, outside timing
        return OfficialTrtRun(checkout, model_name, model_dir, vocoder_dir, device, plan)

    def prepare(self, model: ZipVoice, device: str, precision: str) -> Any:
        raise BackendUnavailable(
            "official-trt runs the checkout's TensorRT engine built from a model folder, not a zvperf model: the "
            "conformance cases run the checkout's model with --backend official"
        )


BACKENDS = [OfficialTrt()]
