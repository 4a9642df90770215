"""official: the official ZipVoice code's own PyTorch solve, on the same weights and inputs, as a row to compare with.

The official package (``zipvoice``, from a clone of https://github.com/k2-fsa/ZipVoice on PYTHONPATH) builds its
own model class from the loaded model's configuration, takes zvperf's state_dict unchanged (the parameter names
are the official ones) and solves with its own Euler solver (``model.solver.sample``). Only the ODE solve is the
official code's: in end-to-end rows the text front end, text encoder and vocoder around it are zvperf's. Nothing
of the official code is part of zvperf; where it is not importable the backend says why and its rows skip.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from typing import Any

import torch
from torch import Tensor

from zvperf.engine.models import ZipVoice
from zvperf.errors import ZvperfError

HOW_TO_INSTALL = (
    "clone https://github.com/k2-fsa/ZipVoice and put the clone on PYTHONPATH (it does not pip-install), "
    "then pip install tensorboard"
)
# zvperf model name -> (module, class) of the official implementation
OFFICIAL_CLASSES = {
    "zipvoice": ("zipvoice.models.zipvoice", "ZipVoice"),
    "zipvoice_distill": ("zipvoice.models.zipvoice_distill", "ZipVoiceDistill"),
}


def _module_missing(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is None
    except ModuleNotFoundError:  # a parent package is missing
        return True


def official_class(model_name: str) -> Any:
    """The official model class for ``model_name``; raises ZvperfError saying why it cannot be imported."""
    if _module_missing("zipvoice") or _module_missing("zipvoice.models"):
        raise ZvperfError(f"the official ZipVoice package is not importable ({HOW_TO_INSTALL})")
    if _module_missing("tensorboard"):
        raise ZvperfError("the official ZipVoice code imports torch.utils.tensorboard: pip install tensorboard")
    module_name, class_name = OFFICIAL_CLASSES[model_name]
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)  # its scaling module warns at import that the optional k2 kernels are absent
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - whatever the official code raises on import is the reason
        raise ZvperfError(f"importing the official {module_name} failed ({type(exc).__name__}: {exc})") from None
    finally:
        logger.setLevel(level)
    return getattr(module, class_name)


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


class Official:
    name = "official"
    precisions = ("fp32",)
    devices = ("cpu", "cuda")

    def unavailable(self, device: str, precision: str) -> str | None:
        try:
            official_class("zipvoice_distill")
        except ZvperfError as exc:
            return str(exc)
        return None

    def prepare(self, model: ZipVoice, device: str, precision: str) -> OfficialSolver:
        cls = official_class(model.name)
        with torch.random.fork_rng(devices=[]):  # its initialisation draws from the global generator
            official = cls(**model.config.to_dict(), vocab_size=model.vocab_size, pad_id=model.pad_id)
        official.load_state_dict(model.state_dict(), strict=True)
        return OfficialSolver(official.to(device=model.device, dtype=torch.float32).eval())


BACKENDS = [Official()]
