"""official: the ZipVoice checkout under test (``zvperf.backends.checkout``), run through its own functions.

A model folder in the official layout is loaded by the checkout's own code as its inference script loads one
(its model classes from model.json, its ``load_checkpoint``, its ``EmiliaTokenizer``, its ``get_vocoder``), and
each benchmark times one of its functions and nothing of zvperf's: the solve (``model.solver.sample``), the text
encoder with the ratio duration rule (``forward_text_inference_ratio_duration``), the vocoder (``vocoder.decode``),
end-to-end synthesis (``generate_sentence``: prompt loading and trimming, features, tokenizer, solve, vocoder) and
the cold start (``python -m zipvoice.bin.infer_zipvoice`` as a fresh process). The environment fixes its code
needs on today's packages (``official_fixes``) are applied around the calls and listed with the results.

Without a folder (``--zv-weights synthetic``) zvperf writes its synthetic weights as one, once, in its cache; the
zvperf rows beside load the same weights, so every official row is verified against zvperf's torch fp32 output.

``prepare`` also takes a zvperf model, whose state_dict (the official names) the official class loads: what
``zvperf conform --backend official`` uses on the conformance cases.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from zvperf.backends import official_fixes
from zvperf.backends.checkout import HOW_TO_GET, Checkout, CheckoutError, import_official, selected
from zvperf.backends.onnx_export import cache_dir
from zvperf.engine.models import ZipVoice
from zvperf.engine.vocoder import VOCOS_REPO
from zvperf.engine.weights import (
    HUB_REPO,
    find_vocoder_dir,
    hub_files,
    load_weights,
    model_directory,
    write_model_dir,
)
from zvperf.errors import ZvperfError
from zvperf.files import build_once

INFER = "zipvoice.bin.infer_zipvoice"
# zvperf model name -> the class name its inference module imports
OFFICIAL_CLASSES = {"zipvoice": "ZipVoice", "zipvoice_distill": "ZipVoiceDistill"}
# Bump when the layout of the synthetic folders zvperf writes changes.
SYNTHETIC_FOLDER_VERSION = 1


def checkout_or_reason() -> tuple[Checkout | None, str | None]:
    """The checkout under test, or why there is none (how to get one), or why the one named is not usable."""
    try:
        checkout = selected()
    except ZvperfError as exc:
        return None, str(exc)
    if checkout is None:
        return None, f"no ZipVoice checkout to run ({HOW_TO_GET})"
    return checkout, None


def infer_module(checkout: Checkout) -> ModuleType:
    return import_official(checkout, INFER)


def model_folder(model_name: str, weights: str, seed: int = 0) -> tuple[Path, Path]:
    """(model folder, Vocos folder) in the official layout for ``--zv-weights``: the folder named, the hub's cache
    (``hub``/``auto`` where it has the model), or zvperf's synthetic weights written once into the cache."""
    if weights in ("hub", "auto"):
        try:
            names = [f"{model_name}/{n}" for n in ("model.pt", "model.json", "tokens.txt")]
            model = hub_files(HUB_REPO, names, cache_only=weights == "auto")[0].parent
            config = hub_files(VOCOS_REPO, ["config.yaml", "pytorch_model.bin"], cache_only=weights == "auto")[0]
            return model, config.parent
        except FileNotFoundError:
            weights = "synthetic"  # as load_weights does for auto with nothing in the hub cache
    if weights == "synthetic":
        folder = cache_dir() / "weights" / f"{model_name}-synthetic-seed{seed}-v{SYNTHETIC_FOLDER_VERSION}"
        build_once(folder / "complete", lambda: _write_synthetic(model_name, seed, folder))
        return folder, folder / "vocos"
    directory = model_directory(model_name, Path(weights))
    vocos = find_vocoder_dir(directory) or find_vocoder_dir(Path(weights))
    if vocos is None:
        raise CheckoutError(
            f"{directory}: the official code needs a local Vocos to run offline (config.yaml and pytorch_model.bin "
            "in the folder or its vocos/ folder); zvperf weights write DIR writes one."
        )
    return directory, vocos


def _write_synthetic(model_name: str, seed: int, folder: Path) -> None:
    write_model_dir(load_weights(model_name, "synthetic", "synthetic", seed), folder)
    (folder / "complete").write_text("written by zvperf: synthetic weights\n")


class OfficialSolver:
    """Callable like :meth:`ZipVoice.solve`: the official model's Euler solve on the same inputs."""

    def __init__(self, official: Any) -> None:
        self.official = official

    def __call__(self, x0: Tensor, text_condition: Tensor, speech_condition: Tensor, padding_mask: Tensor | None,
                 num_step: int, guidance_scale: float, t_shift: float = 0.5) -> Tensor:  # fmt: skip
        if padding_mask is None:  # its guidance wrapper concatenates the mask: it needs one even when all False
            padding_mask = torch.zeros(x0.shape[:2], dtype=torch.bool, device=x0.device)
        with torch.inference_mode():
            return self.official.solver.sample(
                x=x0,
                text_condition=text_condition,
                speech_condition=speech_condition,
                padding_mask=padding_mask,
                num_step=num_step,
                guidance_scale=guidance_scale,
                t_shift=t_shift,
            )


class OfficialRun:
    """One model folder loaded by the checkout's own code, with what its ``generate_sentence`` takes."""

    def __init__(self, checkout: Checkout, model_name: str, model_dir: Path, vocoder_dir: Path, device: str) -> None:
        infer = infer_module(checkout)
        self.checkout, self.infer, self.device = checkout, infer, device
        self.model_dir, self.vocoder_dir, self.model_name = model_dir, vocoder_dir, model_name
        self.fixes = official_fixes.needed()
        checkpoint = next((model_dir / n for n in ("model.pt", "model.safetensors") if (model_dir / n).is_file()), None)
        if checkpoint is None:
            raise CheckoutError(f"{model_dir}: model directory has neither model.pt nor model.safetensors.")
        quiet = logging.getLogger()
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # it logs every load at INFO
        try:
            self.tokenizer = infer.EmiliaTokenizer(token_file=str(model_dir / "tokens.txt"))
            config = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
            cls = getattr(infer, OFFICIAL_CLASSES[model_name])
            model = cls(**config["model"], vocab_size=self.tokenizer.vocab_size, pad_id=self.tokenizer.pad_id)
            if checkpoint.suffix == ".safetensors":
                infer.safetensors.torch.load_model(model, str(checkpoint))
            else:
                infer.load_checkpoint(filename=checkpoint, model=model, strict=True)
            with official_fixes.applied(self.fixes):
                self.vocoder = infer.get_vocoder(str(vocoder_dir)).to(device).eval()
        except Exception as exc:  # noqa: BLE001 - whatever the checkout's loading code raises is the reason
            said = " ".join(str(exc).split())  # torch's load errors span lines: one sentence, its start
            raise CheckoutError(
                f"the ZipVoice checkout {checkout.path} ({checkout.label}) cannot load the model folder {model_dir}: "
                f"{type(exc).__name__}: {said[:400]}"
            ) from None
        finally:
            quiet.setLevel(level)
        self.model = model.to(device).eval()
        self.feature_extractor = infer.VocosFbank()
        self.solver = OfficialSolver(self.model)

    def generate(self, save_path: Path, text: str, prompt_wav: Path, prompt_text: str, num_step: int,
                 guidance_scale: float) -> dict[str, float]:  # fmt: skip
        """Its ``generate_sentence``: its metrics (``t``, ``t_no_vocoder``, ``t_vocoder``, ``wav_seconds``, ``rtf``);
        the waveform is written to ``save_path``."""
        with official_fixes.applied(self.fixes), torch.inference_mode():
            metrics: dict[str, float] = self.infer.generate_sentence(
                save_path=str(save_path),
                prompt_text=prompt_text,
                prompt_wav=str(prompt_wav),
                text=text,
                model=self.model,
                vocoder=self.vocoder,
                tokenizer=self.tokenizer,
                feature_extractor=self.feature_extractor,
                device=torch.device(self.device),
                num_step=num_step,
                guidance_scale=guidance_scale,
            )
        return metrics

    def cli_command(self, save_path: Path, text: str, prompt_wav: Path, prompt_text: str, num_step: int,
                    threads: int) -> list[str]:  # fmt: skip
        """Its inference script as a fresh process (the fixes applied by a script that imports no zvperf module),
        on ``threads`` CPU threads (its own default is 1; the other rows run on torch's default)."""
        return [
            sys.executable, official_fixes.__file__, INFER,
            "--model-name", self.model_name, "--model-dir", str(self.model_dir),
            "--checkpoint-name", next(n for n in ("model.pt", "model.safetensors") if (self.model_dir / n).is_file()),
            "--vocoder-path", str(self.vocoder_dir), "--tokenizer", "emilia",
            "--prompt-wav", str(prompt_wav), "--prompt-text", prompt_text, "--text", text,
            "--res-wav-path", str(save_path), "--num-step", str(num_step), "--num-thread", str(threads),
        ]  # fmt: skip


class Official:
    name = "official"
    precisions = ("fp32",)
    devices = ("cpu", "cuda")
    runs_checkout = True  # its rows time the checkout's own functions (zvperf.suite.benchmarks)

    def unavailable(self, device: str, precision: str) -> str | None:
        """Only the want of a checkout: one that is there but cannot run fails its rows (CheckoutError)."""
        return checkout_or_reason()[1]

    def load(self, model_name: str, weights: str, device: str) -> OfficialRun:
        checkout, reason = checkout_or_reason()
        if checkout is None:
            raise ZvperfError(str(reason))
        model_dir, vocoder_dir = model_folder(model_name, weights)
        return OfficialRun(checkout, model_name, model_dir, vocoder_dir, device)

    def prepare(self, model: ZipVoice, device: str, precision: str) -> OfficialSolver:
        """The official class on a zvperf model's state_dict (conformance cases, which come as zvperf models)."""
        checkout, reason = checkout_or_reason()
        if checkout is None:
            raise ZvperfError(str(reason))
        cls = getattr(infer_module(checkout), OFFICIAL_CLASSES[model.name])
        with torch.random.fork_rng(devices=[]):  # its initialisation draws from the global generator
            official = cls(**model.config.to_dict(), vocab_size=model.vocab_size, pad_id=model.pad_id)
        official.load_state_dict(model.state_dict(), strict=True)
        return OfficialSolver(official.to(device=model.device, dtype=torch.float32).eval())


BACKENDS = [Official()]
