"""The checkout's own ONNX path as rows (official-onnx): its export built once into the cache, its inference
functions timed, each row verified against zvperf's torch fp32 output; an export that fails is one sentence. These
run the real official code, as tests/test_official.py does."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import git
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
