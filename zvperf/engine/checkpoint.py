"""Reading official checkpoints (``model.pt`` or ``model.safetensors``) strictly, with clear errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from zvperf.errors import ZvperfError


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state_dict stored in an official checkpoint file.

    ``model.pt`` holds ``{"model": state_dict}`` (a bare state_dict and DDP's ``module.`` prefix are
    accepted too); it is read with ``weights_only=True`` so that no pickled code runs.
    """
    path = Path(path)
    if not path.is_file():
        raise ZvperfError(f"{path}: checkpoint file not found.")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ZvperfError(f"{path}: not a readable safetensors file ({_first_line(exc)}).") from None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ZvperfError(
            f"{path}: holds more than tensors ({_first_line(exc)}); save it as {{'model': state_dict}} "
            "or as model.safetensors."
        ) from None
    except Exception as exc:  # noqa: BLE001 - the unpickler raises anything at all on a damaged file
        raise ZvperfError(
            f"{path}: not a readable PyTorch checkpoint, corrupt or truncated ({_first_line(exc)})."
        ) from None
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ZvperfError(f"{path}: does not contain a state_dict (expected {{'model': {{name: tensor}}}}).")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise one sentence naming the first missing, unexpected or mis-shaped keys, if any."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} is {list(state[k].shape)} in the checkpoint but {list(expected[k])} in the model"
        for k in expected
        if k in state and tuple(state[k].shape) != expected[k]
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s) such as {', '.join(missing[:3])}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s) such as {', '.join(unexpected[:3])}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {'; '.join(mismatched[:3])}")
    if problems:
        raise ZvperfError(f"{source} does not match the {type(model).__name__} architecture: {'; '.join(problems)}.")


def load_checkpoint(model: nn.Module, path: Path) -> None:
    """Load ``path`` into ``model`` strictly, after checking every key and shape."""
    state = read_state_dict(path)
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
