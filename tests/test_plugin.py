"""The pytest plugin's own behaviour, run through pytester on the tiny model configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers import tiny_weights, write_official_dir
from zvperf import backends
from zvperf.results.schema import REQUIRED_KEYS, RESULTS_FORMAT
from zvperf.suite.matrix import expand

BENCHMARKS = (Path(__file__).parent / "test_benchmarks.py").read_text()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A weights folder laid out like the hub repo: zipvoice/ and zipvoice_distill/, each with a Vocos."""
    root = tmp_path_factory.mktemp("weights")
    for model in ("zipvoice", "zipvoice_distill"):
        write_official_dir(tiny_weights(model), root / model)
    return root


@pytest.fixture
def suite(pytester: pytest.Pytester, tiny_dir: Path):
    """Run the real benchmark module in a fresh directory with the tiny weights; returns (result, json)."""
    pytester.makepyfile(test_benchmarks=BENCHMARKS)

    def run(*args: str):
        out = pytester.path / "out.json"
        result = pytester.runpytest(
            "-p", "no:cacheprovider", "--benchmark-only", f"--benchmark-json={out}", "--zv-device=cpu",
            f"--zv-weights={tiny_dir}", "--zv-rounds=3", "--zv-warmup=1", *args,
        )  # fmt: skip
        data = json.loads(out.read_text()) if out.exists() else None
        return result, data

    return run


def test_matrix_presets_expand_to_the_guide_rows():
    guide = expand("guide")
    steps = ["zipvoice-16step", "zipvoice-8step", "zipvoice-4step"]
    assert [c.id for c in guide.combos[:3]] == [f"{s}-torch-fp32" for s in steps]
    assert [c.id for c in guide.combos[3:6]] == [f"{s}-torch-fp16" for s in steps]
    assert {c.id.split("step-")[1] for c in guide.combos} == {
        "torch-fp32", "torch-fp16", "torch-bf16", "cudagraph-fp16", "trt-fp16"
    }  # fmt: skip
    assert {(c.model, c.num_step) for c in guide.combos} == {
        ("zipvoice", 16), ("zipvoice", 8), ("zipvoice", 4),
        ("zipvoice_distill", 8), ("zipvoice_distill", 4), ("zipvoice_distill", 2),
    }  # fmt: skip
    assert [c.id for c in guide.configs[:2]] == ["zipvoice-torch-fp32", "zipvoice-torch-fp16"]
    backends_only = expand("quick", models=["zipvoice_distill"], steps=[4], backends=["torch", "ort-cpu", "ort-int8"])
    assert [c.id for c in backends_only.combos] == [
        "zipvoice_distill-4step-torch-fp32",
        "zipvoice_distill-4step-ort-cpu-fp32",
        "zipvoice_distill-4step-ort-int8-int8",  # a backend named alone runs in a precision it has
    ]
    batches = expand("quick", models=["zipvoice_distill"], steps=[2], lengths=[1000], batches=[1, 4])
    assert [c.id for c in batches.combos] == [
        "zipvoice_distill-2step-torch-fp32-1000f",
        "zipvoice_distill-2step-torch-fp32-1000f-b4",
    ]
    assert [c.id for c in batches.utterances] == ["zipvoice_distill-2step-torch-fp32"]
    custom = expand("quick", models=["zipvoice_distill"], steps=[3], precisions=["fp16", "bf16"], lengths=[375, 1000])
    assert [c.id for c in custom.combos] == [
        "zipvoice_distill-3step-torch-fp16-375f",
        "zipvoice_distill-3step-torch-fp16-1000f",
        "zipvoice_distill-3step-torch-bf16-375f",
        "zipvoice_distill-3step-torch-bf16-1000f",
    ]


def test_collection_ids_and_keyword_selection(pytester: pytest.Pytester):
    pytester.makepyfile(test_benchmarks=BENCHMARKS)
    result = pytester.runpytest(
        "--collect-only", "-q", "--zv-device=cpu", "--zv-matrix=guide", "-k", "distill and 4step"
    )
    result.stdout.fnmatch_lines(
        ["*test_solver[[]zipvoice_distill-4step-torch-fp32[]]", "*test_e2e[[]zipvoice_distill-4step-torch-fp32[]]"]
    )
    result.stdout.fnmatch_lines(["*10/90 tests collected*"])
    solver = pytester.runpytest("--collect-only", "-q", "--zv-device=cpu", "-k", "solver")
    solver.stdout.fnmatch_lines(["*3/12 tests collected*"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--zv-backends=torch,warp"], "--zv-backends: 'warp' is not one of"),
        (["--zv-precision=fp8"], "--zv-precision: 'fp8' is not one of"),
        (["--zv-models=zipvoice2"], "--zv-models: 'zipvoice2' is not one of"),
        (["--zv-steps=4,x"], "--zv-steps: 'x' is not a whole number"),
        (["--zv-lengths=8"], "--zv-lengths: 8 is below 16"),
        (["--zv-rounds=0"], "--zv-rounds: 0 is below 1"),
        (["--zv-inject-slowdown=11"], "--zv-inject-slowdown: must be from 0 to 10, got 11"),
        (["--zv-prompt-wav=mine.wav"], "--zv-prompt-text is required with --zv-prompt-wav mine.wav"),
    ],
)
def test_bad_options_are_usage_errors(pytester: pytest.Pytester, args, message):
    pytester.makepyfile(test_benchmarks=BENCHMARKS)
    result = pytester.runpytest("--collect-only", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])


def test_a_cuda_run_without_cuda_skips_every_benchmark_with_the_reason(pytester: pytest.Pytester):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    pytester.makepyfile(test_benchmarks=BENCHMARKS)
    result = pytester.runpytest("--benchmark-only", "--zv-device=cuda", "-rs", "-k", "distill")
    result.assert_outcomes(skipped=45)  # the guide matrix's distill rows, the default on CUDA
    result.stdout.fnmatch_lines(["*SKIPPED*no CUDA device is available*"])


def test_an_unavailable_backend_is_skipped_with_its_reason(suite, monkeypatch):
    class MissingTrt:
        name, precisions, devices = "fake-trt", ("fp16",), ("cpu", "cuda")

        def unavailable(self, device, precision):
            return "tensorrt is not installed (pip install zvperf[gpu])"

    monkeypatch.setitem(backends._registry(), "fake-trt", MissingTrt())
    result, _ = suite("--zv-backends=fake-trt", "--zv-precision=fp16", "--zv-models=zipvoice_distill", "-rs")
    result.assert_outcomes(skipped=7)
    result.stdout.fnmatch_lines(["*SKIPPED*tensorrt is not installed (pip install zvperf?gpu?)*"])


def test_run_writes_every_extra_info_key_machine_info_and_the_summary(suite):
    result, data = suite("--zv-steps=4,2", "-k", "not cold_start")
    result.assert_outcomes(passed=12)
    assert data is not None
    names = {b["name"] for b in data["benchmarks"]}
    assert "test_solver[zipvoice-4step-torch-fp32]" in names and "test_vocoder[zipvoice_distill-torch-fp32]" in names
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        assert set(REQUIRED_KEYS) <= set(info), bench["name"]
        assert info["device"] == "cpu" and info["weights"] == "local" and info["backend"] == "torch"
        assert info["telemetry"]["gpu"] == {"available": False, "reason": "not a CUDA run"}
        assert info["telemetry"]["cpu"]["process_cpu_seconds"] > 0
        assert len(bench["stats"]["data"]) == 3  # raw rounds kept for the gate
        if info["kind"] in ("solver", "e2e"):
            assert info["rtf"] == pytest.approx(bench["stats"]["median"] / info["audio_seconds"])
            assert info["ms_per_nfe"] == pytest.approx(bench["stats"]["median"] * 1e3 / info["nfe"])
            assert info["nfe"] == {"zipvoice": 2, "zipvoice_distill": 1}[info["model"]] * info["num_step"]
    e2e = next(b for b in data["benchmarks"] if b["name"] == "test_e2e[zipvoice_distill-2step-torch-fp32]")
    assert set(e2e["extra_info"]["stages_ms"]) == {"tokenize", "features", "text_encoder", "solver", "vocoder", "total"}
    machine = data["machine_info"]["zvperf"]
    assert machine["hardware_key"].startswith("cpu-") and machine["software"]["torch"] == torch.__version__
    assert data["zvperf"]["matrix"] == "quick" and data["zvperf"]["weights"] == ["local"]
    assert data["zvperf"]["format"] == RESULTS_FORMAT
    result.stdout.fnmatch_lines(
        [
            "*zvperf summary (quick matrix, cpu, weights: local)*",
            "configuration*solver ms*e2e ms*RTF*speed-up*peak MiB*flags*",
            "zipvoice-4step-torch-fp32 *",
            "zipvoice_distill-2step-torch-fp32 *",
        ]
    )


def test_speedup_against_the_zipvoice_16_step_row(suite):
    _, data = suite("--zv-steps=16,2", "-k", "solver")
    by_name = {b["param"]: b for b in data["benchmarks"]}
    reference = by_name["zipvoice-16step-torch-fp32"]["stats"]["median"]
    for param, bench in by_name.items():
        expected = reference / bench["stats"]["median"]
        assert bench["extra_info"]["speedup_vs_zipvoice16"] == pytest.approx(expected), param
    assert by_name["zipvoice-16step-torch-fp32"]["extra_info"]["speedup_vs_zipvoice16"] == pytest.approx(1.0)


def test_cold_start_runs_in_a_fresh_process_and_a_backend_that_keeps_its_build_starts_warm_too(suite):
    """torch builds nothing to keep: one cold process a round. ort-cpu keeps its ONNX export in zvperf's cache:
    after its cold processes, as many warm ones start with what the last cold one kept, recorded as warm_*."""
    pytest.importorskip("onnxruntime")
    args = ("--zv-models=zipvoice_distill", "--zv-steps=1", "--zv-backends=torch,ort-cpu", "--zv-rounds=1")
    result, data = suite(*args, "-k", "cold_start")
    result.assert_outcomes(passed=2)
    phases = {b["extra_info"]["backend"]: b["extra_info"]["phases_s"] for b in data["benchmarks"]}
    cold = {"import_s", "load_s", "first_call_s"}
    assert set(phases["torch"]) == cold
    assert set(phases["ort-cpu"]) == cold | {f"warm_{name}" for name in cold}
    for bench in data["benchmarks"]:  # the phases are the fresh process's own: inside its timed round
        cold_phases = [v for k, v in bench["extra_info"]["phases_s"].items() if not k.startswith("warm_")]
        assert sum(cold_phases) < bench["stats"]["median"]


def test_injected_slowdown_is_recorded(suite):
    _, data = suite("--zv-models=zipvoice_distill", "--zv-steps=1", "-k", "solver", "--zv-inject-slowdown=0.5")
    assert data["benchmarks"][0]["extra_info"]["injected_slowdown"] == 0.5
    assert data["zvperf"]["injected_slowdown"] == 0.5


def test_a_path_option_with_its_value_apart_warns_that_pytest_took_the_value_for_a_test_path(pytester):
    """pytest chooses its rootdir before it loads zvperf: the separate form is named, with the form to write."""
    pytester.makepyfile(test_nothing="def test_nothing(): pass")
    weights = pytester.mkdir("weights")
    apart = pytester.runpytest("-p", "no:cacheprovider", "--co", "--zv-device=cpu", "--zv-weights", str(weights))
    apart.stdout.fnmatch_lines(
        [f"*PytestConfigWarning: --zv-weights {weights}: pytest took {weights} for a test path*"],
    )
    assert f"write --zv-weights={weights}" in apart.stdout.str()
    joined = pytester.runpytest("-p", "no:cacheprovider", "--co", "--zv-device=cpu", f"--zv-weights={weights}")
    assert "PytestConfigWarning" not in joined.stdout.str()
