"""official-onnx: the checkout's own ONNX path on the CPU, fp32 and int8.

Its export (``zipvoice.bin.onnx_export`` run as its CLI, the environment fixes applied) writes the text encoder and
the decoder in fp32 and int8 into a folder of zvperf's cache, once per checkout and model folder; its inference
script's ``OnnxModel`` then runs them, and its rows time its ``sample``, its text encoder session and its
``generate_sentence``, and its inference script as a fresh process (the cold start), as ``official`` does for its
PyTorch path.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from functools import partial
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

EXPORT = "zipvoice.bin.onnx_export"
INFER_ONNX = "zipvoice.bin.infer_zipvoice_onnx"
# What its export writes into --onnx-model-dir, per precision: (text encoder, decoder), the names its inference
# script reads (--onnx-int8 picks the second pair). One export writes both precisions.
FILES = {
    "fp32": ("text_encoder.onnx", "fm_decoder.onnx"),
    "int8": ("text_encoder_int8.onnx", "fm_decoder_int8.onnx"),
}
COMPLETE = "complete"  # written last: a folder without it is an export that did not finish


def exported(checkout: Checkout, model_name: str, model_dir: Path) -> Path:
    """The folder of the checkout's ONNX export of ``model_dir`` (both precisions, with the model.json and
    tokens.txt its inference script reads beside them), exported on first use; keyed by the checkout's code and
    the folder's checkpoint."""
    name = f"{model_name}-{folder_digest(model_dir)}-{checkout.cache_key}"
    folder = cache_dir() / "official-onnx" / name
    return build_once(folder / COMPLETE, lambda: _export(checkout, model_name, model_dir, folder)).parent


def _export(checkout: Checkout, model_name: str, model_dir: Path, folder: Path) -> None:
    checkpoint = next((n for n in ("model.pt", "model.safetensors") if (model_dir / n).is_file()), "model.pt")
    args = ["--onnx-model-dir", str(folder), "--model-name", model_name, "--model-dir", str(model_dir),
            "--checkpoint-name", checkpoint]  # fmt: skip
    run_official_script(checkout, EXPORT, args, f"to export {model_dir} to ONNX")
    missing = [f for files in FILES.values() for f in files if not (folder / f).is_file()]
    if missing:
        raise CheckoutError(
            f"the ZipVoice checkout {checkout.path} ({checkout.label}) exported {model_dir} to ONNX without "
            f"writing {', '.join(missing)}, which its inference script reads."
        )
    for data in ("model.json", "tokens.txt"):
        shutil.copyfile(model_dir / data, folder / data)
    (folder / COMPLETE).write_text(f"exported by {EXPORT} of {checkout.path} ({checkout.label})\n")


class OfficialOnnxRun(OfficialRun):
    """Its ONNX inference on an exported folder: its ``OnnxModel`` (text encoder and decoder sessions) in place of
    the PyTorch model, with the tokenizer, Vocos and features its inference script loads."""

    infer_module = INFER_ONNX
    # Its ONNX inference decodes with the PyTorch Vocos of its get_vocoder, in fp32 whatever the precision: the
    # official row times that very call, and a row here would read as an ONNX (or int8) vocoder that is not there.
    not_its_own = {
        "vocoder": "the official ONNX path decodes with the same PyTorch Vocos (get_vocoder) as the official row, "
        "which times it"
    }

    def __init__(self, checkout: Checkout, model_name: str, model_dir: Path, vocoder_dir: Path, onnx_dir: Path,
                 precision: str) -> None:  # fmt: skip
        self.onnx_dir, self.precision = onnx_dir, precision
        self.quantised_text_encoder = precision == "int8"
        super().__init__(checkout, model_name, model_dir, vocoder_dir, "cpu")

    def load_model(self) -> None:
        text_encoder, fm_decoder = (str(self.onnx_dir / name) for name in FILES[self.precision])
        # On torch's CPU threads, as the other rows run (its own default is 1 thread).
        self.model = self.infer.OnnxModel(text_encoder, fm_decoder, num_thread=torch.get_num_threads())

    def facts(self) -> dict[str, Any]:
        return {**self.checkout.facts(), "onnx": {"folder": str(self.onnx_dir), "files": list(FILES[self.precision])}}

    def solve_call(self, inputs: SolverInputs, num_step: int, guidance_scale: float) -> Callable[[], Tensor]:
        """Its ``sample``, the only ONNX solve it has: its text encoder session runs first (one call, small beside
        the decoder steps) and it draws its own noise; one utterance at the length its text encoder gives."""
        if not inputs.own_length or inputs.batch != 1:
            raise BackendUnavailable(
                "the official ONNX sample solves one utterance at the length its text encoder gives: no fixed "
                "length or batch"
            )
        return partial(
            self.infer.sample,
            model=self.model,
            tokens=[inputs.text_ids],
            prompt_tokens=[inputs.prompt_ids],
            prompt_features=inputs.speech_condition[:, : inputs.prompt_frames].float(),
            speed=1.0,
            t_shift=0.5,
            guidance_scale=guidance_scale,
            num_step=num_step,
        )

    def solved(self, inputs: SolverInputs, num_step: int, guidance_scale: float, seed: int) -> tuple[Tensor, int]:
        """Its sample draws x0 with ``torch.randn`` from the global generator after its text encoder: seeded with
        the seed of ``inputs.x0`` (a CPU generator's first draw), its x0 is that one. It returns the generated
        frames only (after the prompt's)."""
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(seed)
            return self.solve_call(inputs, num_step, guidance_scale)(), inputs.prompt_frames

    def text_encoder_call(self, inputs: SolverInputs) -> Callable[[], Any]:
        return partial(
            self.model.run_text_encoder,
            torch.tensor([inputs.text_ids]),
            torch.tensor([inputs.prompt_ids]),
            torch.tensor(inputs.prompt_frames),
            torch.tensor(1.0),
        )

    def text_condition(self, output: Any) -> tuple[Tensor, Tensor | None]:
        return output, None  # one utterance, no padding

    def generate_options(self) -> dict[str, Any]:
        return {}  # its ONNX generate_sentence runs on the CPU and takes no device

    def cli_model_options(self) -> list[str]:
        return [
            "--model-name", self.model_name, "--model-dir", str(self.onnx_dir),
            "--onnx-int8", str(self.precision == "int8"),
        ]  # fmt: skip


class OfficialOnnx:
    name = "official-onnx"
    precisions = ("fp32", "int8")
    devices = ("cpu",)
    runs_checkout = True

    def unavailable(self, device: str, precision: str) -> str | None:
        """The want of a checkout, or of the packages its export and inference import."""
        return checkout_path_unavailable("ONNX", ("onnx", "onnxruntime"), "onnx")

    def load(self, model_name: str, weights: str, device: str, precision: str) -> OfficialOnnxRun:
        checkout = checkout_to_run()
        model_dir, vocoder_dir = model_folder(model_name, weights)
        onnx_dir = exported(checkout, model_name, model_dir)  # once, outside timing
        return OfficialOnnxRun(checkout, model_name, model_dir, vocoder_dir, onnx_dir, precision)

    def prepare(self, model: ZipVoice, device: str, precision: str) -> Any:
        raise BackendUnavailable(
            "official-onnx runs the checkout's ONNX inference from text with its own noise, not a solve of given "
            "inputs: the conformance cases run the checkout's model with --backend official"
        )


BACKENDS = [OfficialOnnx()]
