"""The gate matrix: a pull request's rows, their stopping rule and processes, and its time to verdict."""

from __future__ import annotations

import importlib
import json
import math
import re
import statistics
from pathlib import Path

import pytest
import torch

from tests.helpers import tiny_weights, write_official_dir
from zvperf.cli import main
from zvperf.errors import ZvperfError
from zvperf.gate.stats import median_spread
from zvperf.results.schema import load_results
from zvperf.suite import timing
from zvperf.suite.matrix import GATE_PRESETS, Stopping, expand, preset
from zvperf.suite.telemetry import Telemetry
from zvperf.suite.timing import MAX_ROUNDS, PRECISE, TIME_CAP, HostReference, measure, stop_reason
from zvperf.suite.verdict_time import H100_PROCESS_SECONDS, expected_rounds, row_ids, verdict_time

ROOT = Path(__file__).parents[1]
H100 = ROOT / "reports" / "nvidia-h100-80gb-hbm3" / "results.json"
GATE_KINDS = ("solver", "e2e", "text_encoder", "vocoder")


def test_the_gate_matrix_is_each_devices_fastest_path_of_each_model_with_its_end_to_end_rows():
    cuda = expand("gate", device="cuda")
    assert [c.id for c in cuda.combos] == [
        "zipvoice-16step-cudagraph-fp16-1800f",
        "zipvoice-16step-trt-fp16-1800f",
        "zipvoice_distill-4step-cudagraph-fp16-1800f",
        "zipvoice_distill-4step-trt-fp16-1800f",
    ]
    assert [c.id for c in cuda.utterances][:1] == ["zipvoice-16step-cudagraph-fp16"]  # end to end: the text's length
    assert cuda.kinds == GATE_KINDS and cuda.stopping == Stopping(precision=0.01, time_cap_s=6)
    cpu = expand("gate", device="cpu")
    assert [c.id for c in cpu.combos] == [
        "zipvoice-4step-torch-fp32",
        "zipvoice-4step-torch-bf16",
        "zipvoice_distill-4step-torch-fp32",
        "zipvoice_distill-4step-torch-bf16",
    ]
    with_checkout = expand("gate", device="cuda", checkout_device="cuda")
    assert {"cudagraph", "trt", "official"} <= {c.backend for c in with_checkout.configs}  # the checkout's own rows
    for device, chosen in GATE_PRESETS.items():
        assert chosen is preset("gate", device) and (chosen.processes, chosen.baseline_processes) == (3, 8)
        assert chosen.rounds >= 6  # the fewest rounds whose median has a 95% interval
    assert expand("guide").kinds == ("solver", "e2e", "text_encoder", "vocoder", "cold_start")
    with pytest.raises(ZvperfError, match=r"--zv-matrix 'nightly' is not one of quick, guide, full, gate\."):
        expand("nightly")


class Pedantic:
    """pytest-benchmark's pedantic mode as measure() calls it: setup, the timed call, teardown, each round."""

    def pedantic(self, target, setup, teardown, rounds, warmup_rounds, iterations):
        for _ in range(warmup_rounds + rounds):
            setup()
            result = target()
            teardown()
        return result


@pytest.mark.parametrize(("rewarm_below", "extra_calls"), [(timing.REWARM_BELOW, 4), (0, 0)])
def test_a_short_row_is_called_again_untimed_after_the_reference_evicts_its_data(
    monkeypatch, rewarm_below: int, extra_calls: int
):
    # A call far shorter than the reference: after the first round, each round's setup times the reference and then
    # calls it once more, untimed. A call longer than REWARM_BELOW references (here: a bound of 0) is not.
    monkeypatch.setattr(timing, "REWARM_BELOW", rewarm_below)
    calls = []
    reference = HostReference(torch.float32)
    with Telemetry("cpu") as telemetry:
        measure(
            Pedantic(), lambda: calls.append(1), device="cpu", rounds=3, warmup_rounds=2, telemetry=telemetry,
            reference=reference,
        )  # fmt: skip
    assert len(reference.seconds) == 5 and len(calls) == 5 + extra_calls


def test_a_rows_rounds_stop_when_its_median_is_precise_at_the_time_cap_or_at_the_most_rounds():
    rule = Stopping(precision=0.01, time_cap_s=10.0)
    tight = [1.0 + 0.001 * i for i in range(6)]
    assert stop_reason(tight, rule) == PRECISE
    assert stop_reason(tight[:5], rule) is None  # five rounds give the median no interval: keep going
    wide = [0.5, 1.5] * 3
    assert stop_reason(wide, rule) is None
    assert stop_reason([*wide, 0.5, 1.5, 0.5, 1.5], rule) == TIME_CAP  # 10 s of rounds
    fast_wide = [0.01, 0.03] * 25
    assert stop_reason(fast_wide, rule) == MAX_ROUNDS
    # The median's 95% interval between order statistics: for 10 rounds the 2nd and the 9th (P(B <= 1) = 0.011).
    assert median_spread([float(i) for i in range(1, 11)]) == pytest.approx((9 - 2) / 2 / 5.5)
    assert median_spread([1.0] * 5) == math.inf


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("weights")
    write_official_dir(tiny_weights("zipvoice_distill"), root / "zipvoice_distill")
    return root


@pytest.mark.processes
def test_a_gate_matrix_run_stops_each_row_by_its_rule_and_says_why_and_leaves_cold_starts_out(
    pytester: pytest.Pytester, tiny_dir: Path, one_thread
):
    importlib.import_module("scipy.stats")  # before the in-process run: numpy's C modules cannot load twice
    pytester.makepyfile(test_benchmarks=(ROOT / "tests" / "test_benchmarks.py").read_text())
    out = pytester.path / "out.json"
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--benchmark-only", f"--benchmark-json={out}", "--zv-device=cpu",
        f"--zv-weights={tiny_dir}", "--zv-matrix=gate", "--zv-time-cap=2", "-k", "zipvoice_distill-4step-torch-fp32",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.OK
    data = json.loads(out.read_text())
    rule = GATE_PRESETS["cpu"].stopping
    assert rule is not None and data["zvperf"]["matrix"] == "gate"
    assert {b["extra_info"]["kind"] for b in data["benchmarks"]} == {"solver", "e2e"}
    for benchmark in data["benchmarks"]:
        stopping, rounds = benchmark["extra_info"]["stopping"], benchmark["stats"]["data"]
        assert len(rounds) >= GATE_PRESETS["cpu"].rounds
        assert stopping["precision"] == rule.precision and stopping["time_cap_s"] == 2
        assert stopping["median_spread"] == pytest.approx(median_spread(rounds))
        # Each reason holds of the rounds it ended, and the rounds before the last did not already stop.
        assert stopping["reason"] == stop_reason(rounds, Stopping(rule.precision, 2))
        assert (
            len(rounds) == GATE_PRESETS["cpu"].rounds or stop_reason(rounds[:-1], Stopping(rule.precision, 2)) is None
        )
        # The host's reference was timed before every round, warm-up rounds too, in the row's precision.
        reference = benchmark["extra_info"]["host_reference"]
        assert len(reference["seconds"]) == len(rounds) + GATE_PRESETS["cpu"].warmup_rounds
        assert reference["median"] == statistics.median(reference["seconds"]) > 0
        assert reference["workload"].endswith("float32 matrix products")
    unmeasured = data["zvperf"]["unmeasured"]["zipvoice_distill-torch-fp32 cold_start"]
    assert unmeasured == {
        "outcome": "deselected",
        "reason": "not a row of the gate matrix, which times solver, e2e, text_encoder, vocoder",
    }
    fixed = pytester.runpytest(
        "-p", "no:cacheprovider", "--benchmark-only", f"--benchmark-json={out}", "--zv-device=cpu",
        f"--zv-weights={tiny_dir}", "--zv-matrix=gate", "--zv-rounds=2", "-k",
        "zipvoice_distill-4step-torch-fp32 and solver",
    )  # fmt: skip
    assert fixed.ret == pytest.ExitCode.OK
    (benchmark,) = json.loads(out.read_text())["benchmarks"]
    info = benchmark["extra_info"]
    assert len(benchmark["stats"]["data"]) == 2 and "stopping" not in info and "host_reference" not in info  # fixed


def test_expected_rounds_follow_the_stopping_rule_from_the_measured_spread():
    chosen = GATE_PRESETS["cuda"]
    assert expected_rounds(0.2, 0.003, chosen) == (chosen.rounds, "precise")  # a CUDA graph's 0.3% IQR
    # 8% IQR: (1.96 x 1.2533 x 0.08 / 1.349 / 0.01)^2 = 212 rounds; 0.2 s rounds reach the 6 s cap after 30,
    # 0.05 s rounds the 50 a baseline stores first.
    assert expected_rounds(0.2, 0.08, chosen) == (30, "time cap")
    assert expected_rounds(0.05, 0.08, chosen) == (50, "max rounds")
    assert expected_rounds(0.5, 0.02, chosen) == (12, "time cap")  # 14 rounds would reach 1%
    assert expected_rounds(0.5, 0.015, chosen) == (8, "precise")
    assert expected_rounds(0.5, 0.9, preset("guide", "cuda")) == (10, "fixed")


def test_the_dry_run_prints_the_gate_jobs_time_to_verdict_from_the_h100_run(capsys):
    assert main(["bench", "--dry-run", "--measured", str(H100)]) == 0
    out = capsys.readouterr().out.splitlines()
    measured = load_results(H100)
    estimate = verdict_time(row_ids(expand("gate", device="cuda")), measured, GATE_PRESETS["cuda"], 26.2, 6)
    assert out[0].startswith("zvperf bench --dry-run: the gate matrix on cuda, from ") and "nothing runs" in out[0]
    rows = {line.split()[0]: line for line in out[3:] if line.startswith("zipvoice")}
    graph = next(r for r in measured.results if r.id == "zipvoice-16step-cudagraph-fp16-1800f solver")
    assert re.search(
        rf"{graph.median * 1e3:.1f} ms .* 3\+6 +precise .* measured$", rows["zipvoice-16step-cudagraph-fp16-1800f"]
    )
    assert rows["zipvoice-16step-cudagraph-fp16"].endswith("stand-in: zipvoice-16step-torch-fp16 e2e")
    assert estimate.process_seconds == H100_PROCESS_SECONDS and estimate.processes == 3
    assert estimate.judged_seconds == pytest.approx(3 * (H100_PROCESS_SECONDS + sum(r.seconds for r in estimate.rows)))
    longest = sorted(r.seconds for r in estimate.rows)[-3:]
    assert estimate.confirm_seconds == pytest.approx(2 * 6 * (H100_PROCESS_SECONDS + sum(longest)))
    assert out[-1] == f"expected time to verdict: {estimate.total_seconds / 60:.1f} min"
    assert estimate.total_seconds <= 15 * 60  # the target: 15 minutes on one H100, A/B of three rows included
    assert main(["bench", "--dry-run", "--measured", "nowhere.json"]) == 2
    assert "nowhere.json: file not found" in capsys.readouterr().err
