"""The architecture of a ZipVoice model, as written in the official ``model.json``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from zvperf.errors import ZvperfError
from zvperf.files import read_json


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The keys of the official ``model.json`` "model" section (defaults: the released base model)."""

    fm_decoder_downsampling_factor: tuple[int, ...] = (1, 2, 4, 2, 1)
    fm_decoder_num_layers: tuple[int, ...] = (2, 2, 4, 4, 4)
    fm_decoder_cnn_module_kernel: tuple[int, ...] = (31, 15, 7, 15, 31)
    fm_decoder_feedforward_dim: int = 1536
    fm_decoder_num_heads: int = 4
    fm_decoder_dim: int = 512
    text_encoder_num_layers: int = 4
    text_encoder_feedforward_dim: int = 512
    text_encoder_cnn_module_kernel: int = 9
    text_encoder_num_heads: int = 4
    text_encoder_dim: int = 192
    time_embed_dim: int = 192
    text_embed_dim: int = 192
    query_head_dim: int = 32
    value_head_dim: int = 12
    pos_head_dim: int = 4
    pos_dim: int = 48
    feat_dim: int = 100

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, section: dict[str, Any], source: str = "the model configuration") -> ModelConfig:
        """Validate a "model" section: every key present, no unknown key, sane values."""
        if not isinstance(section, dict):
            raise ZvperfError(f'{source}: the "model" section must be a JSON object.')
        known = cls.keys()
        unknown = sorted(set(section) - set(known))
        if unknown:
            raise ZvperfError(f'{source}: unknown key {unknown[0]!r} in the "model" section.')
        missing = [k for k in known if k not in section]
        if missing:
            raise ZvperfError(f'{source}: key {missing[0]!r} is missing from the "model" section.')
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            value = section[field.name]
            if field.name in _LIST_KEYS:
                if not (isinstance(value, list) and value and all(_positive_int(v) for v in value)):
                    raise ZvperfError(f"{source}: {field.name} must be a list of positive integers, not {value!r}.")
                values[field.name] = tuple(value)
            else:
                if not _positive_int(value):
                    raise ZvperfError(f"{source}: {field.name} must be a positive integer, not {value!r}.")
                values[field.name] = value
        config = cls(**values)
        config._check_consistency(source)
        return config

    def _check_consistency(self, source: str) -> None:
        stacks = len(self.fm_decoder_downsampling_factor)
        for name in ("fm_decoder_num_layers", "fm_decoder_cnn_module_kernel"):
            if len(getattr(self, name)) != stacks:
                raise ZvperfError(
                    f"{source}: {name} has {len(getattr(self, name))} entries but "
                    f"fm_decoder_downsampling_factor has {stacks}."
                )
        factors = self.fm_decoder_downsampling_factor
        half = stacks // 2
        u_shaped = stacks % 2 == 1 and all(factors[i] == 2**i == factors[stacks - 1 - i] for i in range(half + 1))
        if not u_shaped:
            raise ZvperfError(
                f"{source}: fm_decoder_downsampling_factor must double up to the middle and halve back to 1 "
                f"(like [1, 2, 4, 2, 1]), got {list(factors)}."
            )
        kernels = list(self.fm_decoder_cnn_module_kernel) + [self.text_encoder_cnn_module_kernel]
        if any(k % 2 == 0 for k in kernels):
            raise ZvperfError(f"{source}: convolution kernel sizes must be odd, got {kernels}.")
        if self.pos_dim % 2:
            raise ZvperfError(f"{source}: pos_dim must be even, got {self.pos_dim}.")
        if self.fm_decoder_dim % 4 or self.text_encoder_dim % 4:
            raise ZvperfError(f"{source}: fm_decoder_dim and text_encoder_dim must be multiples of 4.")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


_LIST_KEYS = {"fm_decoder_downsampling_factor", "fm_decoder_num_layers", "fm_decoder_cnn_module_kernel"}


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def read_model_json(path: Path) -> tuple[ModelConfig, dict[str, Any]]:
    """Read an official ``model.json``: returns the model config and the "feature" section."""
    data = read_json(path)
    if not isinstance(data, dict) or "model" not in data:
        raise ZvperfError(f'{path}: has no "model" section.')
    feature = data.get("feature", {"sampling_rate": 24000, "type": "vocos"})
    if feature.get("type", "vocos") != "vocos":
        raise ZvperfError(f'{path}: feature type {feature.get("type")!r} is not supported (only "vocos").')
    return ModelConfig.from_dict(data["model"], source=str(path)), feature
