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

import hashlib
import importlib.util
import json
import logging
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from zvperf.backends import official_fixes
from zvperf.backends.checkout import HOW_TO_GET, Checkout, CheckoutError, import_official, selected
from zvperf.engine.models import ZipVoice
from zvperf.engine.solver import SolverInputs
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
from zvperf.files import build_once, cache_dir

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


def checkout_path_unavailable(path: str, packages: tuple[str, ...], extra: str) -> str | None:
    """Why the checkout's ``path`` (its ONNX or TensorRT code) cannot run here: no checkout, or the ``packages``
    that path imports are missing (pip install zvperf[``extra``]); None when it can."""
    reason = checkout_or_reason()[1]
    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if reason is None and missing:
        reason = f"the official {path} path imports {' and '.join(missing)} (pip install zvperf[{extra}])"
    return reason


def checkout_to_run() -> Checkout:
    """The checkout under test; without one, the reason as a ZvperfError."""
    checkout, reason = checkout_or_reason()
    if checkout is None:
        raise ZvperfError(str(reason))
    return checkout


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
    """One model folder loaded by the checkout's own code, with what its functions take; the rows of ``official``
    time its PyTorch path, and the subclasses its other paths (``official_onnx``, ``official_trt``) through the same
    methods."""

    infer_module = INFER  # the inference script whose functions (and CLI) the rows run
    # Kinds of row whose official function is no different on this path: kind -> why it skips.
    not_its_own: dict[str, str] = {}
    quantised_text_encoder = False  # whether its text encoder is int8 (the text condition's tolerance)

    def __init__(self, checkout: Checkout, model_name: str, model_dir: Path, vocoder_dir: Path, device: str) -> None:
        self.infer = import_official(checkout, self.infer_module)
        self.checkout, self.device = checkout, device
        self.model_dir, self.vocoder_dir, self.model_name = model_dir, vocoder_dir, model_name
        self.fixes = official_fixes.needed()
        self.checkpoint = next((n for n in ("model.pt", "model.safetensors") if (model_dir / n).is_file()), None)
        if self.checkpoint is None:
            raise CheckoutError(f"{model_dir}: model directory has neither model.pt nor model.safetensors.")
        quiet = logging.getLogger()
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # it logs every load at INFO
        try:
            self.tokenizer = self.infer.EmiliaTokenizer(token_file=str(model_dir / "tokens.txt"))
            with official_fixes.applied(self.fixes):
                self.vocoder = self.infer.get_vocoder(str(vocoder_dir)).to(device).eval()
            self.load_model()
        except Exception as exc:  # noqa: BLE001 - whatever the checkout's loading code raises is the reason
            said = " ".join(str(exc).split())  # torch's load errors span lines: one sentence, its start
            raise CheckoutError(
                f"the ZipVoice checkout {checkout.path} ({checkout.label}) cannot load the model folder {model_dir}: "
                f"{type(exc).__name__}: {said[:400]}"
            ) from None
        finally:
            quiet.setLevel(level)
        self.feature_extractor = self.infer.VocosFbank()

    def load_model(self) -> None:
        """Its model class from model.json and its checkpoint loader, as its inference script loads them."""
        infer = self.infer
        config = json.loads((self.model_dir / "model.json").read_text(encoding="utf-8"))
        cls = getattr(infer, OFFICIAL_CLASSES[self.model_name])
        model = cls(**config["model"], vocab_size=self.tokenizer.vocab_size, pad_id=self.tokenizer.pad_id)
        checkpoint = self.model_dir / str(self.checkpoint)
        if checkpoint.suffix == ".safetensors":
            infer.safetensors.torch.load_model(model, str(checkpoint))
        else:
            infer.load_checkpoint(filename=checkpoint, model=model, strict=True)
        self.model = model.to(self.device).eval()

    def facts(self) -> dict[str, Any]:
        """What every result of its rows records: the checkout's facts, and what was built from it for this path."""
        return self.checkout.facts()

    def solve_call(self, inputs: SolverInputs, num_step: int, guidance_scale: float) -> Callable[[], Tensor]:
        """What the solver row times: its solver's ``sample`` on the prepared inputs (fp32, as its text encoder
        gives them)."""
        x0, text, speech, mask = (None if t is None else t.float() for t in inputs.solver_args())
        assert x0 is not None and text is not None and speech is not None
        return partial(
            self.model.solver.sample,
            x=x0,
            text_condition=text,
            speech_condition=speech,
            # its guidance wrapper concatenates the mask: it needs one even when all False
            padding_mask=torch.zeros(x0.shape[:2], dtype=torch.bool, device=x0.device) if mask is None else mask,
            num_step=num_step,
            guidance_scale=guidance_scale,
            t_shift=0.5,
        )

    def solved(self, inputs: SolverInputs, num_step: int, guidance_scale: float, seed: int) -> tuple[Tensor, int]:
        """Its solve's x1 for the check against torch fp32, and the first decoder frame that x1 covers; ``seed``
        is the one ``inputs.x0`` was drawn with (for a path that draws its own noise)."""
        with torch.inference_mode():
            return self.solve_call(inputs, num_step, guidance_scale)(), 0

    def text_encoder_call(self, inputs: SolverInputs) -> Callable[[], Any]:
        """What the text-encoder row times: its ratio-duration text encoding of the prompt and text."""
        return partial(
            self.model.forward_text_inference_ratio_duration,
            tokens=[inputs.text_ids],
            prompt_tokens=[inputs.prompt_ids],
            prompt_features_lens=torch.tensor([inputs.prompt_frames], device=self.device),
            speed=1.0,
        )

    def text_condition(self, output: Any) -> tuple[Tensor, Tensor | None]:
        """The text condition in what :meth:`text_encoder_call` returns, and its valid entries (None: all)."""
        condition, padding = output
        return condition, ~padding[..., None].expand_as(condition)

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
                num_step=num_step,
                guidance_scale=guidance_scale,
                **self.generate_options(),
            )
        return metrics

    def generate_options(self) -> dict[str, Any]:
        """What this path's ``generate_sentence`` takes beyond the arguments they all take."""
        return {"device": torch.device(self.device)}

    def cli_command(self, save_path: Path, text: str, prompt_wav: Path, prompt_text: str, num_step: int,
                    threads: int) -> list[str]:  # fmt: skip
        """Its inference script as a fresh process (the fixes applied by a script that imports no zvperf module),
        on ``threads`` CPU threads (its own default is 1; the other rows run on torch's default)."""
        return [
            sys.executable, official_fixes.__file__, self.infer_module, *self.cli_model_options(),
            "--vocoder-path", str(self.vocoder_dir), "--tokenizer", "emilia",
            "--prompt-wav", str(prompt_wav), "--prompt-text", prompt_text, "--text", text,
            "--res-wav-path", str(save_path), "--num-step", str(num_step), "--num-thread", str(threads),
        ]  # fmt: skip

    def cli_model_options(self) -> list[str]:
        """How its inference script is told the model to load."""
        return [
            "--model-name", self.model_name, "--model-dir", str(self.model_dir),
            "--checkpoint-name", str(self.checkpoint),
        ]  # fmt: skip


def run_official_script(checkout: Checkout, module: str, args: list[str], what: str) -> None:
    """The checkout's script ``module`` as a fresh process, the environment fixes applied (``official_fixes``): the
    one-time builds (its ONNX export, its TensorRT engine), outside timing. A failure is one sentence saying
    ``what`` failed and the last line the script wrote."""
    command = [sys.executable, official_fixes.__file__, module, *args]
    with tempfile.TemporaryDirectory(prefix="zvperf-official-build-") as folder:  # whatever it writes beside
        completed = subprocess.run(command, capture_output=True, text=True, cwd=folder, check=False)
    if completed.returncode != 0:
        said = error_line(completed.stderr)
        raise CheckoutError(f"the ZipVoice checkout {checkout.path} ({checkout.label}) failed {what}: {said}")


def error_line(stderr: str) -> str:
    """What a Python process that failed said: the first line of its last exception (``SomeError: ...``; messages
    such as torch's run over many lines), else its last line."""
    lines = [line.rstrip() for line in stderr.splitlines() if line.strip()]
    raised = [line for line in lines if re.match(r"[A-Za-z_][\w.]*(: |$)", line)]
    said = (raised or lines or ["no output"])[-1].strip()
    return said if len(said) <= 400 else said[:399] + "…"


def folder_digest(model_dir: Path) -> str:
    """A short hash of a model folder's checkpoint, configuration and tokens (what a build from it depends on)."""
    digest = hashlib.sha256()
    for name in ("model.pt", "model.safetensors", "model.json", "tokens.txt"):
        path = model_dir / name
        if path.is_file():
            digest.update(name.encode())
            with path.open("rb") as file:
                for block in iter(lambda: file.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


class Official:
    name = "official"
    precisions = ("fp32",)
    devices = ("cpu", "cuda")
    runs_checkout = True  # its rows time the checkout's own functions (zvperf.suite.benchmarks)

    def unavailable(self, device: str, precision: str) -> str | None:
        """Only the want of a checkout: one that is there but cannot run fails its rows (CheckoutError)."""
        return checkout_or_reason()[1]

    def load(self, model_name: str, weights: str, device: str, precision: str) -> OfficialRun:
        model_dir, vocoder_dir = model_folder(model_name, weights)
        return OfficialRun(checkout_to_run(), model_name, model_dir, vocoder_dir, device)

    def prepare(self, model: ZipVoice, device: str, precision: str) -> OfficialSolver:
        """The official class on a zvperf model's state_dict (conformance cases, which come as zvperf models)."""
        cls = getattr(infer_module(checkout_to_run()), OFFICIAL_CLASSES[model.name])
        with torch.random.fork_rng(devices=[]):  # its initialisation draws from the global generator
            official = cls(**model.config.to_dict(), vocab_size=model.vocab_size, pad_id=model.pad_id)
        official.load_state_dict(model.state_dict(), strict=True)
        return OfficialSolver(official.to(device=model.device, dtype=torch.float32).eval())


BACKENDS = [Official()]
