"""Where the weights come from: a local directory, the Hugging Face hub, or seeded random ("synthetic").

All three give the same thing, a :class:`Weights`: the model with its checkpoint loaded strictly,
its vocabulary and tokenizer, the Vocos vocoder, and an honest label of what was loaded. Synthetic
weights have the official full-size architecture, so timings are real while the audio is noise.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

import torch
from vocos import Vocos

from zvperf.engine.checkpoint import load_checkpoint
from zvperf.engine.config import ModelConfig, read_model_json
from zvperf.engine.models import ZipVoice, ZipVoiceDistill
from zvperf.engine.tokenizer import Tokenizer, Vocabulary, builtin_vocabulary, make_tokenizer
from zvperf.engine.vocoder import MEL_24KHZ_CONFIG, VOCOS_REPO, load_vocos_dir, save_vocos_dir, synthetic_vocos
from zvperf.errors import ZvperfError

log = logging.getLogger(__name__)

HUB_REPO = "k2-fsa/ZipVoice"
MODELS: dict[str, type[ZipVoice]] = {"zipvoice": ZipVoice, "zipvoice_distill": ZipVoiceDistill}
# What a result says of its weights: the published checkpoints (the hub's, downloaded or in its cache), a local
# folder of any other origin (a fine-tune, or random weights someone saved), or zvperf's seeded random ones.
OFFICIAL = "official"
LOCAL = "local"
SYNTHETIC = "synthetic"


@dataclasses.dataclass
class Weights:
    model: ZipVoice
    tokenizer: Tokenizer
    vocoder: Vocos
    kind: str  # OFFICIAL, LOCAL or SYNTHETIC: the least official of the model's and the vocoder's origins
    description: str  # where each part came from, for reports

    @property
    def model_name(self) -> str:
        return self.model.name


def check_model_name(model_name: str) -> type[ZipVoice]:
    if model_name not in MODELS:
        raise ZvperfError(f"model {model_name!r} is not one of {', '.join(MODELS)}.")
    return MODELS[model_name]


def synthetic_model(model_name: str, seed: int = 0, config: ModelConfig | None = None) -> tuple[ZipVoice, Vocabulary]:
    """The official architecture (or ``config``) with seeded random weights and the built-in vocabulary."""
    cls = check_model_name(model_name)
    vocabulary = builtin_vocabulary()
    config = config or ModelConfig()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls.from_config(config, vocab_size=len(vocabulary), pad_id=vocabulary.pad_id)
        _scale_as_official_init(model, config)
    return model.eval(), vocabulary


# The official code starts some linear layers at a fraction of torch's default scale (its ScaledLinear's
# initial_scale), chiefly the last projection of every residual branch, so that a deep stack of untrained layers
# stays close to the identity. Synthetic weights follow it: without it the full-size random network is chaotic,
# and half-precision rounding grows through 16 guided Euler steps far past the tolerances (x1 error against fp32,
# full size, 300 frames, on a CPU; zipvoice 16 steps: bf16 0.35 and fp16 0.16 with torch's default initialisation,
# 0.016 and 0.0020 with these scales; zipvoice_distill 4 steps: 0.070 and 0.012, then 0.0098 and 0.0012; the
# first GPU check failed its zipvoice half-precision rows on this). By state_dict name; biases are redrawn in
# +-0.1 x scale, as the official code does.
_OFFICIAL_INIT_SCALES: tuple[tuple[re.Pattern[str], Callable[[ModelConfig], float]], ...] = (
    (re.compile(r"\.self_attn_weights\.in_proj$"), lambda config: config.query_head_dim**-0.25),
    (re.compile(r"\.self_attn_weights\.linear_pos$"), lambda config: 0.05),
    (re.compile(r"\.self_attn[12]\.out_proj$"), lambda config: 0.05),
    (re.compile(r"\.nonlin_attention\.out_proj$"), lambda config: 0.05),
    (re.compile(r"\.conv_module[12]\.out_proj$"), lambda config: 0.05),
    (re.compile(r"\.feed_forward[123]\.out_proj$"), lambda config: 0.1),
    (re.compile(r"^fm_decoder\.guidance_scale_embed$"), lambda config: 0.1),
)


def _scale_as_official_init(model: ZipVoice, config: ModelConfig) -> None:
    with torch.no_grad():
        for name, module in model.named_modules():
            scale = next(
                (scale_of(config) for pattern, scale_of in _OFFICIAL_INIT_SCALES if pattern.search(name)), None
            )
            if scale is None:
                continue
            module.weight.mul_(scale)  # a Linear, or the ActivationLinear of a feed-forward or convolution branch
            if getattr(module, "bias", None) is not None:
                module.bias.uniform_(-0.1 * scale, 0.1 * scale)


def load_model_dir(model_name: str, directory: Path) -> tuple[ZipVoice, Vocabulary]:
    """A model directory in the official layout: model.pt or model.safetensors, model.json, tokens.txt."""
    cls = check_model_name(model_name)
    directory = Path(directory)
    if not directory.is_dir():
        raise ZvperfError(f"{directory}: model directory not found.")
    checkpoint = next((directory / n for n in ("model.pt", "model.safetensors") if (directory / n).is_file()), None)
    if checkpoint is None:
        raise ZvperfError(f"{directory}: model directory has neither model.pt nor model.safetensors.")
    for name in ("model.json", "tokens.txt"):
        if not (directory / name).is_file():
            raise ZvperfError(f"{directory}: model directory has no {name}.")
    config, _ = read_model_json(directory / "model.json")
    vocabulary = Vocabulary.from_file(directory / "tokens.txt")
    model = cls.from_config(config, vocab_size=len(vocabulary), pad_id=vocabulary.pad_id)
    load_checkpoint(model, checkpoint)
    return model.eval(), vocabulary


def hub_files(repo: str, filenames: list[str], cache_only: bool) -> list[Path]:
    """Paths of ``filenames`` from a hub repo through huggingface_hub (which honours HF_HUB_OFFLINE)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    paths = []
    for filename in filenames:
        try:
            paths.append(Path(hf_hub_download(repo, filename, local_files_only=cache_only)))
        except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
            if cache_only:
                raise FileNotFoundError(filename) from None
            offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
            raise ZvperfError(
                f"downloading {filename} from the hub repo {repo} failed{offline}: {type(exc).__name__}; "
                "--weights synthetic runs offline with seeded random weights."
            ) from None
    return paths


def find_vocoder_dir(model_dir: Path) -> Path | None:
    """A Vocos in the hub layout inside the model directory (itself or its vocos/ folder), if there is one."""
    for candidate in (model_dir / "vocos", model_dir):
        if (candidate / "config.yaml").is_file() and (candidate / "pytorch_model.bin").is_file():
            return candidate
    return None


def load_weights(
    model_name: str,
    weights: str = "auto",
    vocoder: str = "auto",
    seed: int = 0,
    tokenizer: str = "emilia",
    lang: str = "en-us",
) -> Weights:
    """Load a model and a vocoder.

    ``weights``: a model directory (or a folder of them named after the models, as on the hub),
    ``hub`` (download), ``synthetic``, or ``auto`` (the hub's local cache if it has the model, else
    synthetic; auto never waits on the network).
    ``vocoder``: a directory with config.yaml + pytorch_model.bin, ``hub``, ``synthetic``, or ``auto``
    (follows the model: its directory's Vocos if it has one, else the hub, its cache, or synthetic).
    """
    model, vocabulary, model_from = _load_model(model_name, weights, seed)
    vocos, vocos_from = _load_vocoder(_vocoder_for(model_name, weights) if vocoder == "auto" else vocoder, seed)
    return Weights(
        model=model,
        tokenizer=make_tokenizer(tokenizer, vocabulary, lang),
        vocoder=vocos,
        kind=_least_official(model_from, vocos_from),
        description=f"model: {model_from}; vocoder: {vocos_from}",
    )


def _least_official(*origins: str) -> str:
    """SYNTHETIC if any part is synthetic, else LOCAL if any came from a local folder, else OFFICIAL (the hub's)."""
    for kind in (SYNTHETIC, LOCAL):
        if any(origin.startswith(kind) for origin in origins):
            return kind
    return OFFICIAL


def _hub_snapshot_of(directory: Path, repo: str) -> bool:
    """Whether ``directory`` is (inside) a snapshot of the hub repo ``repo`` in huggingface_hub's cache, whose files
    the hub client checked against their published hashes when it downloaded them."""
    marker = "models--" + repo.replace("/", "--")
    return any(part == marker for part in directory.resolve().parts)


def write_model_dir(
    weights: Weights, directory: Path, vocoder_config: dict | None = None, checkpoint: str = "model.pt"
) -> Path:
    """``weights`` as a model folder in the official layout (``checkpoint`` -- model.pt or model.safetensors --,
    model.json, tokens.txt) with the vocoder in its ``vocos/`` folder in the hub layout: what the official
    inference script loads (--model-dir, --vocoder-path), and what ``--zv-weights DIR`` loads."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = weights.model.state_dict()
    if checkpoint == "model.pt":
        torch.save({"model": state}, directory / checkpoint)
    elif checkpoint == "model.safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(directory / checkpoint))
    else:
        raise ZvperfError(f"checkpoint {checkpoint!r} is neither model.pt nor model.safetensors.")
    config = {"model": weights.model.config.to_dict(), "feature": {"sampling_rate": 24000, "type": "vocos"}}
    (directory / "model.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    weights.tokenizer.vocabulary.write(directory / "tokens.txt")
    save_vocos_dir(weights.vocoder, vocoder_config or MEL_24KHZ_CONFIG, directory / "vocos")
    return directory


def _synthetic_label(seed: int, why: str = "") -> str:
    return f"synthetic (seeded random weights, seed {seed}{why})"


def _load_model(model_name: str, weights: str, seed: int) -> tuple[ZipVoice, Vocabulary, str]:
    check_model_name(model_name)
    if weights == "synthetic":
        return (*synthetic_model(model_name, seed), _synthetic_label(seed))
    if weights in ("hub", "auto"):
        names = [f"{model_name}/{n}" for n in ("model.pt", "model.json", "tokens.txt")]
        try:
            files = hub_files(HUB_REPO, names, cache_only=weights == "auto")
        except FileNotFoundError:
            log.info("the hub cache has no %s weights; using synthetic weights", model_name)
            return (
                *synthetic_model(model_name, seed),
                _synthetic_label(seed, "; no official weights in the hub cache"),
            )
        return (*load_model_dir(model_name, files[0].parent), f"hub {HUB_REPO}/{model_name}")
    directory = model_directory(model_name, Path(weights))
    origin = (
        f"hub {HUB_REPO}/{model_name} ({directory})" if _hub_snapshot_of(directory, HUB_REPO) else f"local {directory}"
    )
    return (*load_model_dir(model_name, directory), origin)


def model_directory(model_name: str, path: Path) -> Path:
    """``path`` itself, or its ``<model_name>/`` folder when it is laid out like the hub repo (one per model)."""
    nested = path / model_name
    return nested if nested.is_dir() and not (path / "model.json").is_file() else path


def _vocoder_for(model_name: str, weights: str) -> str:
    """The vocoder that goes with a model source when none is named."""
    if weights in ("synthetic", "hub"):
        return weights
    if weights == "auto":
        return "cache"
    root = Path(weights)
    for directory in (model_directory(model_name, root), root):
        local = find_vocoder_dir(directory)
        if local is not None:
            return str(local)
    return "cache"


def _load_vocoder(spec: str, seed: int) -> tuple[Vocos, str]:
    """``spec``: synthetic, hub, cache (the hub's local cache, else synthetic) or a directory."""
    if spec == "synthetic":
        return synthetic_vocos(seed), _synthetic_label(seed)
    if spec in ("hub", "cache"):
        try:
            files = hub_files(VOCOS_REPO, ["config.yaml", "pytorch_model.bin"], cache_only=spec == "cache")
        except FileNotFoundError:
            return synthetic_vocos(seed), _synthetic_label(seed, "; no official Vocos in the hub cache")
        return load_vocos_dir(files[0].parent), f"hub {VOCOS_REPO}"
    local = Path(spec)
    origin = f"hub {VOCOS_REPO} ({spec})" if _hub_snapshot_of(local, VOCOS_REPO) else f"local {spec}"
    return load_vocos_dir(local), origin
