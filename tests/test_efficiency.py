"""How far each row is from the machine's limit: the FLOP count from the configuration, checked against torch's own
counter on the real model, and the attainable GEMM rate measured per run."""

from __future__ import annotations

import tempfile
from pathlib import Path

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


@pytest.mark.slow
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


def test_the_linear_layers_carry_most_of_the_work():
    """What the GEMM benchmark times: the decoder's per-frame linear layers, most of a step's FLOPs at 1800
    frames (the rest: attention products and the depthwise convolutions)."""
    config = ModelConfig()
    step = decoder_step_flops(config, 1800, 1, False)
    assert 0.8 < sum(linear.flops for linear in decoder_linears(config, 1800, 1)) / step < 1.0
    assert decoder_step_flops(config, 843, 1, False) == pytest.approx(131.06e9, rel=1e-4)  # the figure


def test_every_solver_row_reports_its_flop_rate_and_fraction_of_the_measured_gemm_rate(pytester, tmp_path):
    """In the JSON (extra_info and machine_info), the summary table and both reports."""
    import json

    from tests.helpers import run_tiny_benchmarks, tiny_weights
    from zvperf.cli import main

    result, out = run_tiny_benchmarks(pytester, tmp_path / "weights", "--zv-batch=1,2", "--zv-warmup=0")
    result.assert_outcomes(passed=2)
    data = json.loads(out.read_text())
    gemm = data["machine_info"]["zvperf"]["gemm"]["fp32"]
    assert gemm["flop_rate"] == max(gemm["rates"].values()) and gemm["rates"][gemm["method"]] == gemm["flop_rate"]
    assert {"torch", "onednn"} <= set(gemm["rates"]) and gemm["frames"] == 1800
    config = tiny_weights("zipvoice_distill").model.config
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        assert info["flops"] == solve_flops(config, 100, info["batch"], [False, False], True)
        assert info["flop_rate"] == pytest.approx(info["flops"] / bench["stats"]["median"])
        assert info["gemm_efficiency"] == pytest.approx(info["flop_rate"] / gemm["flop_rate"])
        assert info["attainable_flop_rate"] == gemm["flop_rate"]  # the limit this process measured, with the row
        assert "peak_efficiency" not in info  # a CPU has no peak figure
    result.stdout.fnmatch_lines(
        ["configuration*RTF*GFLOP/s*of GEMM peak*", "zipvoice_distill-2step-torch-fp32-100f *%*"]
    )
    for lang, heading in (("en", "Of the attainable GEMM rate"), ("ja", "到達可能な GEMM 性能に対する割合")):
        report = tmp_path / f"report.{lang}.md"
        assert main(["report", str(out), "--lang", lang, "-o", str(report)]) == 0
        markdown = report.read_text(encoding="utf-8")
        assert heading in markdown and "fp32" in markdown and f"{gemm['flop_rate'] / 1e9:.1f} GFLOP/s" in markdown
        first = data["benchmarks"][0]
        row = (
            f"| `{first['param']}` | {first['stats']['median'] * 1e3:.1f} | {first['extra_info']['flops'] / 1e9:.1f} |"
        )
        assert row in markdown


def test_the_attainable_rate_is_the_best_implementation_and_a_failing_one_is_recorded(monkeypatch):
    from zvperf.suite import gemm

    def broken(shape):
        raise RuntimeError("no kernel for this shape")

    real = gemm.methods
    monkeypatch.setattr(gemm, "methods", lambda device, precision: {**real(device, precision), "broken": broken})
    measured = gemm.attainable_rate(tiny_config(), "cpu", "fp32")
    assert measured is not None
    assert measured["failed"] == {"broken": "RuntimeError: no kernel for this shape"}
    assert measured["flop_rate"] == max(measured["rates"].values()) > 0
    assert gemm.attainable_rate(tiny_config(), "cuda", "int8") is None  # no int8 implementation on CUDA


def test_the_dense_peak_comes_from_the_architecture_sm_count_and_clock():
    from zvperf.suite.gemm import peak_rate

    h100 = peak_rate((9, 0), 132, 1980, "fp16")
    assert h100 is not None and h100["flop_rate"] == pytest.approx(4096 * 132 * 1.98e9)  # about 1.07 PFLOP/s
    assert "4096 FLOP/clock/SM x 132 SMs x 1980 MHz" in h100["how"]
    a100 = peak_rate((8, 0), 108, 1410, "fp32")
    assert a100 is not None and a100["flop_rate"] == pytest.approx(19.5e12, rel=0.01)  # the whitepaper's figure
    assert peak_rate((8, 9), 128, 2520, "fp16") is None  # no figure claimed for consumer/data-centre mixes
    assert peak_rate((9, 0), 132, None, "fp16") is None  # NVML could not give the clock


@pytest.mark.parametrize(
    ("efficiency", "peak", "flags"),
    [
        (0.9, 0.3, ()),
        (1.3, 0.4, ("over-limit: 130% of the attainable GEMM rate: the limit or the FLOP count is wrong",)),
        (0.9, 1.02, ("over-limit: 102% of the dense peak: the limit or the FLOP count is wrong",)),
    ],
)
def test_a_rate_above_the_machines_limit_is_flagged_never_read(efficiency, peak, flags):
    """The H100 run measured its limit on the host's clock, one call at a time: its rows came out at 130-220%."""
    from tests.gate_data import bench, write_results
    from zvperf.results import sanity

    row = bench("zipvoice_distill-4step-cudagraph-fp16", [0.1] * 5, gemm_efficiency=efficiency, peak_efficiency=peak)
    (result,) = write_results(Path(tempfile.mkdtemp()) / "r.json", [row]).results
    sanity.check([result])
    assert result.flags == flags


def test_the_committed_h100_rows_above_their_limit_are_flagged():
    from zvperf.results import sanity
    from zvperf.results.schema import load_results

    results = load_results(Path(__file__).parents[1] / "reports" / "nvidia-h100-80gb-hbm3" / "results.json").results
    sanity.check(results)
    above = [r for r in results if (r.facts.gemm_efficiency or 0) > 1]
    assert above and all(any(f.startswith("over-limit: ") for f in r.flags) for r in above)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_attainable_rate_is_the_devices_and_below_its_peak():
    """Timed back to back between CUDA events: a decoder-shaped product repeated in a CUDA graph reaches at most
    that rate, and the rate stays under the chip's dense peak where the table has one."""
    from zvperf.engine.config import ModelConfig
    from zvperf.suite.gemm import attainable_rate

    measured = attainable_rate(ModelConfig(), "cuda", "fp16")
    assert measured is not None
    peak = measured["peak"]
    if peak is not None:
        assert measured["flop_rate"] < peak["flop_rate"]
    x = torch.randn(1, 1800, 1024, device="cuda", dtype=torch.float16)
    w = torch.randn(1024, 1024, device="cuda", dtype=torch.float16)
    graph = torch.cuda.CUDAGraph()
    torch.nn.functional.linear(x, w)
    torch.cuda.synchronize()
    with torch.cuda.graph(graph):
        for _ in range(50):
            torch.nn.functional.linear(x, w)
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    graph.replay()
    end.record()
    end.synchronize()
    rate = 50 * 2 * 1800 * 1024 * 1024 / (start.elapsed_time(end) / 1e3)
    assert rate <= 1.25 * measured["rates"]["torch"]  # one shape may beat the mix of shapes, not by far
