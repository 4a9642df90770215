"""The checkout's own ONNX and TensorRT paths as rows (official-onnx, official-trt): its export built once into the
cache, its inference functions timed, each row verified against zvperf's torch fp32 output; an export that fails is
one sentence; the TensorRT rows skip where there is no GPU or tensorrt. These run the real official code, as
tests/test_official.py does."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.conftest import git
from zvperf.backends import BackendUnavailable, check_runnable, get_backend
from zvperf.backends.checkout import ENV, import_official, open_checkout
from zvperf.backends.official_trt import ENGINE_FILE, OfficialTrtRun, export_args
from zvperf.engine.precision import TOLERANCES

OWN_KINDS = ("solver", "e2e", "text_encoder", "cold_start")  # the vocoder is the official row's PyTorch Vocos


@pytest.fixture
def private_cache(tmp_path, monkeypatch) -> Path:
    """The exports go to a fresh cache per test."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("ZVPERF_CACHE", str(cache))
    return cache


def onnx_rows(data: dict) -> dict[str, dict]:
    return {b["name"]: b["extra_info"] for b in data["benchmarks"] if b["extra_info"]["backend"] == "official-onnx"}


def test_onnx_rows_are_its_own_code_verified_and_its_export_is_built_once(
    run_official, zipvoice_checkout, private_cache
):
    result, data = run_official(zipvoice_checkout, "--zv-backends=official-onnx", "--zv-precision=fp32,int8")
    result.assert_outcomes(passed=2 * len(OWN_KINDS), skipped=2)
    result.stdout.fnmatch_lines(["*SKIPPED*the official ONNX path decodes with the same PyTorch Vocos*"])
    commit = git(zipvoice_checkout, "rev-parse", "HEAD")
    rows = onnx_rows(data)
    assert sorted(info["kind"] for info in rows.values()) == sorted(OWN_KINDS * 2)
    for name, info in rows.items():
        assert info["zipvoice"]["commit"] == commit and info["zipvoice"]["dirty"] is False, name
        folder = Path(info["zipvoice"]["onnx"]["folder"])
        assert folder.parent == private_cache / "official-onnx", name
        int8 = info["precision"] == "int8"
        expected = (
            ["text_encoder_int8.onnx", "fm_decoder_int8.onnx"] if int8 else ["text_encoder.onnx", "fm_decoder.onnx"]
        )
        assert info["zipvoice"]["onnx"]["files"] == expected, name
        if info["kind"] != "cold_start":  # the script's own noise draw: its length is what is compared
            bound = {"text_encoder": TOLERANCES["int8"]["quantised_text_condition"]}.get(info["kind"], 2e-1)
            assert info["verified_error"] is not None and info["verified_error"] <= (bound if int8 else 1e-3), name
    e2e = rows["test_e2e[zipvoice_distill-2step-official-onnx-int8]"]
    assert set(e2e["official_metrics"]) == {"t", "t_no_vocoder", "t_vocoder", "wav_seconds", "rtf"}
    # One export for both precisions, and a second run takes it from the cache.
    (folder,) = (private_cache / "official-onnx").iterdir()
    stamps = {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}
    assert {"fm_decoder.onnx", "fm_decoder_int8.onnx", "model.json", "tokens.txt", "complete"} <= set(stamps)
    result, _ = run_official(zipvoice_checkout, "--zv-backends=official-onnx", "--zv-precision=int8", "-k", "solver")
    result.assert_outcomes(passed=1)
    assert {path.name: path.stat().st_mtime_ns for path in folder.iterdir()} == stamps


def test_a_checkout_whose_onnx_export_fails_fails_its_rows_in_one_sentence(
    run_official, checkout_copy, tiny_dir, private_cache
):
    export = checkout_copy / "zipvoice" / "bin" / "onnx_export.py"
    source = export.read_text()
    # A commit that lowers the opset: torch's exporter cannot write its graph, and says so over many lines.
    broken = source.replace("    opset_version = 13\n", "    opset_version = 1\n")
    assert broken != source
    export.write_text(broken)
    result, _ = run_official(checkout_copy, "--zv-backends=official-onnx", "-k", "text_encoder")
    result.assert_outcomes(failed=1)
    folder = tiny_dir / "zipvoice_distill"
    result.stdout.fnmatch_lines(
        [f"*the ZipVoice checkout {checkout_copy} (*+dirty) failed to export {folder} to ONNX: *Error: *"]
    )
    assert not list((private_cache / "official-onnx").glob("*/complete"))  # nothing half-built is taken later


def test_naming_a_checkout_adds_its_onnx_rows_on_the_cpu(run_official, zipvoice_checkout):
    result, _ = run_official(zipvoice_checkout, "--collect-only", "-q")
    collected = "\n".join(result.outlines)
    for precision in ("fp32", "int8"):
        assert f"test_solver[zipvoice_distill-2step-official-onnx-{precision}]" in collected
    assert "official-trt" not in collected  # a CUDA row


def test_the_tensorrt_rows_skip_here_with_the_reason(run_official, zipvoice_checkout, checkout_env, monkeypatch):
    """This machine has no GPU (the rows skip saying so); without tensorrt the reason is the package."""
    import torch

    if torch.cuda.is_available() and importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("this machine has CUDA and tensorrt: the official TensorRT path can run")
    monkeypatch.setenv(ENV, str(zipvoice_checkout))
    backend = get_backend("official-trt")
    with pytest.raises(BackendUnavailable, match="backend official-trt does not run on cpu"):
        check_runnable(backend, "cpu", "fp16")
    real = importlib.util.find_spec
    with monkeypatch.context() as patch:
        patch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorrt" else real(name, *a))
        reason = backend.unavailable("cuda", "fp16")
    assert reason == "the official TensorRT path imports tensorrt (pip install zvperf[gpu])"
    if not torch.cuda.is_available():
        result, _ = run_official(zipvoice_checkout, "--zv-device=cuda", "--zv-backends=official-trt", "-k", "solver")
        result.assert_outcomes(skipped=1)
        result.stdout.fnmatch_lines(["*SKIPPED*no CUDA device is available*"])


def test_the_tensorrt_commands_are_the_ones_its_scripts_take(zipvoice_checkout, checkout_env, tmp_path):
    """Unproven without a GPU: what official-trt hands the checkout's export and inference scripts parses as they
    read it (their own argument parsers)."""
    checkout = open_checkout(zipvoice_checkout)
    model_dir = tmp_path / "zipvoice_distill"
    model_dir.mkdir()
    (model_dir / "model.pt").write_bytes(b"")
    args = export_args("zipvoice_distill", model_dir, tmp_path / "engine", ENGINE_FILE)
    # Its export module patches its positional encoding on import: that is dropped with the module after the test.
    parsed = import_official(checkout, "zipvoice.bin.tensorrt_export").get_parser().parse_args(args)
    assert (parsed.model_name, parsed.model_dir, parsed.checkpoint_name) == (
        "zipvoice_distill",
        str(model_dir),
        "model.pt",
    )
    assert (parsed.tensorrt_model_dir, parsed.trt_engine_file_name) == (str(tmp_path / "engine"), ENGINE_FILE)
    run = OfficialTrtRun.__new__(OfficialTrtRun)  # its fields, without loading an engine (no GPU here)
    run.model_name, run.model_dir, run.vocoder_dir, run.checkpoint = "zipvoice_distill", model_dir, tmp_path, "model.pt"
    run.plan = tmp_path / "engine" / ENGINE_FILE
    command = run.cli_command(tmp_path / "out.wav", "Hello.", tmp_path / "prompt.wav", "Hi.", 2, 1)
    assert command[2] == "zipvoice.bin.infer_zipvoice"
    parsed = import_official(checkout, command[2]).get_parser().parse_args(command[3:])
    assert parsed.trt_engine_path == str(run.plan) and parsed.model_dir == str(model_dir) and parsed.num_step == 2
