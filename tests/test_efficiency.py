"""How far each row is from the machine's limit: the FLOP count from the configuration, checked against torch's own
counter on the real model, and the attainable GEMM rate measured per run."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tests.helpers import tiny_config
from zvperf.engine.config import ModelConfig
from zvperf.engine.flops import decoder_linears, decoder_step_flops, solve_flops
from zvperf.engine.models import DecoderStep
from zvperf.engine.weights import synthetic_model


def counted(call) -> int:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        call()
    return counter.get_total_flops()


@pytest.mark.parametrize("model_name", ["zipvoice", "zipvoice_distill"])
@pytest.mark.parametrize(("batch", "frames"), [(1, 203), (2, 97)])
def test_solve_flops_from_the_configuration_match_torchs_flop_counter(model_name, batch, frames):
    model, _ = synthetic_model(model_name, config=tiny_config())
    generator = torch.Generator().manual_seed(0)
    x0, text, speech = (torch.randn(batch, frames, model.feat_dim, generator=generator) for _ in range(3))
    padding = torch.zeros(batch, frames, dtype=torch.bool)
    padding[-1, frames - 7 :] = True  # padding changes no product's size
    guidance = model.default_guidance_scale
    plan = model.plan(3, guidance, 0.5)
    expected = solve_flops(model.config, frames, batch, [bool(s.guidance) for s in plan], model.guidance_is_input)
    assert counted(lambda: model.solve(x0, text, speech, padding, 3, guidance)) == expected


@pytest.mark.parametrize("guided", [False, True])
def test_one_decoder_step_of_the_full_size_model(guided):
    """The full-size decoder on a short input (the count is exact at any length; the issue's 131 GFLOP is
    843 frames)."""
    model, _ = synthetic_model("zipvoice" if guided else "zipvoice_distill")
    frames, batch = 37, 1
    step = DecoderStep(model.fm_decoder, model.feat_dim, guided)
    rows = 2 * batch if guided else batch
    config = model.config
    args = (
        torch.randn(batch, frames, model.feat_dim),
        torch.randn(rows, frames, config.fm_decoder_dim),
        None,
        torch.randn(1, config.time_embed_dim),
        torch.tensor([0.25, -0.1]),
    )
    assert counted(lambda: step(*args)) == decoder_step_flops(config, frames, batch, guided)
    assert decoder_step_flops(ModelConfig(), 843, 1, False) == pytest.approx(131.06e9, rel=1e-4)


def test_the_linear_layers_carry_most_of_the_work():
    """What the GEMM benchmark times: the decoder's per-frame linear layers, most of a step's FLOPs at 1800
    frames (the rest: attention products and the depthwise convolutions)."""
    config = ModelConfig()
    share = sum(linear.flops for linear in decoder_linears(config, 1800, 1)) / decoder_step_flops(
        config, 1800, 1, False
    )
    assert 0.8 < share < 1.0
