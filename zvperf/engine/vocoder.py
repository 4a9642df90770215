"""The Vocos mel-24khz vocoder, from the ``vocos`` package: local files, the hub, or seeded random weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from zvperf.engine.checkpoint import check_state_dict
from zvperf.errors import ZvperfError

VOCOS_REPO = "charactr/vocos-mel-24khz"

# The published charactr/vocos-mel-24khz architecture (its config.yaml).
MEL_24KHZ_CONFIG: dict[str, Any] = {
    "feature_extractor": {
        "class_path": "vocos.feature_extractors.MelSpectrogramFeatures",
        "init_args": {"sample_rate": 24000, "n_fft": 1024, "hop_length": 256, "n_mels": 100, "padding": "center"},
    },
    "backbone": {
        "class_path": "vocos.models.VocosBackbone",
        "init_args": {"input_channels": 100, "dim": 512, "intermediate_dim": 1536, "num_layers": 8},
    },
    "head": {
        "class_path": "vocos.heads.ISTFTHead",
        "init_args": {"dim": 512, "n_fft": 1024, "hop_length": 256, "padding": "center"},
    },
}


def vocos_from_config(config: dict[str, Any], source: str):
    """Build a Vocos model from a config.yaml dictionary, checking that it decodes 100-bin 24 kHz mels."""
    from vocos import Vocos
    from vocos.pretrained import instantiate_class

    try:
        parts = {
            name: instantiate_class(args=(), init=config[name]) for name in ("feature_extractor", "backbone", "head")
        }
    except (KeyError, TypeError, ImportError, AttributeError, ValueError) as exc:
        raise ZvperfError(f"{source}: not a Vocos configuration ({type(exc).__name__}: {exc}).") from None
    features = config["feature_extractor"].get("init_args", {})
    if features.get("sample_rate", 24000) != 24000 or features.get("n_mels", 100) != 100:
        raise ZvperfError(f"{source}: ZipVoice needs a 24 kHz, 100-mel Vocos (this one is {features}).")
    return Vocos(**parts)


def load_vocos_dir(directory: Path):
    """Vocos from ``config.yaml`` and ``pytorch_model.bin`` in ``directory`` (the hub layout), loaded strictly."""
    directory = Path(directory)
    config_path, weights_path = directory / "config.yaml", directory / "pytorch_model.bin"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise ZvperfError(f"{directory}: the vocoder needs {path.name}, which is missing.")
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ZvperfError(f"{config_path}: not valid YAML ({exc}).") from None
    if not isinstance(config, dict):
        raise ZvperfError(f"{config_path}: not a Vocos configuration (expected a mapping).")
    vocoder = vocos_from_config(config, str(config_path))
    from zvperf.engine.checkpoint import read_state_dict

    state = read_state_dict(weights_path)
    check_state_dict(vocoder, state, str(weights_path))
    vocoder.load_state_dict(state, strict=True)
    return vocoder.eval()


def synthetic_vocos(seed: int):
    """The mel-24khz architecture with seeded random weights: real cost, meaningless audio."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return vocos_from_config(MEL_24KHZ_CONFIG, "the built-in Vocos configuration").eval()


def save_vocos_dir(vocoder, config: dict[str, Any], directory: Path) -> None:
    """Write a vocoder in the hub layout (config.yaml + pytorch_model.bin)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    torch.save(vocoder.state_dict(), directory / "pytorch_model.bin")
