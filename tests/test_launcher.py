"""The multi-GPU launcher on the CPU with fake devices: two processes, one merged JSON with both shards."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers import tiny_weights, write_official_dir
from zvperf.cli import main
from zvperf.errors import ZvperfError
from zvperf.suite.launcher import merge, parse_gpus

pytestmark = pytest.mark.processes

BENCHMARKS = Path(__file__).parent / "test_benchmarks.py"


UUID = "GPU-8932f937-d72c-4106-c12f-20bd9faed9f6"


def test_two_shards_run_as_two_processes_and_merge(tmp_path, monkeypatch, capsys):
    """The runner was given two GPUs (an inherited CUDA_VISIBLE_DEVICES): each shard gets one of them."""
    weights = tmp_path / "weights"
    for model in ("zipvoice", "zipvoice_distill"):
        write_official_dir(tiny_weights(model), weights / model)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{UUID},7")
    out = tmp_path / "merged.json"
    code = main(
        ["bench", "--gpus", "all", "--output", str(out), "--", "-p", "no:cacheprovider",
         "--zv-device=cpu", f"--zv-weights={weights}", "--zv-steps=1", "-k", "solver", "--zv-rounds=2", "--zv-warmup=0"]
    )  # fmt: skip
    assert code == 0
    assert f"2 benchmarks from 2 shard(s) on GPUs {UUID},7" in capsys.readouterr().out
    merged = json.loads(out.read_text())
    shards = {b["param"]: b["extra_info"]["shard"] for b in merged["benchmarks"]}
    # The matrix's two configurations, one per process, each pinned to its own (fake) device.
    assert shards == {
        "zipvoice-1step-torch-fp32": {"index": 0, "cuda_visible_devices": UUID},
        "zipvoice_distill-1step-torch-fp32": {"index": 1, "cuda_visible_devices": "7"},
    }
    assert merged["machine_info"]["zvperf"]["shards"] == [UUID, "7"]
    assert merged["machine_info"]["zvperf"]["onnxruntime_providers"] == {}


def test_gpu_lists(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert parse_gpus("0,2") == ["0", "2"]
    assert parse_gpus("all", count=3) == ["0", "1", "2"]
    with pytest.raises(ZvperfError, match="no GPU is visible"):
        parse_gpus("all", count=0)
    with pytest.raises(ZvperfError, match="expected 'all' or distinct GPU indices"):
        parse_gpus("0,0")


def test_shards_of_different_gpus_are_not_merged(tmp_path):
    paths = []
    for index, key in enumerate(["nvidia-h100", "nvidia-l20"]):
        path = tmp_path / f"{index}.json"
        path.write_text(json.dumps({"machine_info": {"zvperf": {"hardware_key": key}}, "benchmarks": []}))
        paths.append(path)
    with pytest.raises(ZvperfError, match=r"different kinds \(nvidia-h100, nvidia-l20\)"):
        merge(paths)


def test_a_bad_shard_option_is_a_usage_error(pytester):
    pytester.makepyfile(test_benchmarks=BENCHMARKS.read_text())
    result = pytester.runpytest("--collect-only", "--zv-shard=2/2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--zv-shard: '2/2': expected I/N with 0 <= I < N*"])


def test_an_inherited_cuda_visible_devices_is_split_not_overwritten():
    """Its entries, as written, by CUDA's rules; indices given with --gpus count within it."""
    assert parse_gpus("all", inherited=f"{UUID}, 3") == [UUID, "3"]
    assert parse_gpus("1", inherited=f"{UUID},3") == ["3"]
    assert parse_gpus("all", inherited="2,x,3") == ["2"]  # CUDA stops at the first invalid entry
    with pytest.raises(ZvperfError, match=r"GPU 2 is not among the 2 that CUDA_VISIBLE_DEVICES='4,5' makes visible"):
        parse_gpus("0,2", inherited="4,5")
    for nothing in ("", "0,0", "-1"):
        with pytest.raises(ZvperfError, match=rf"no GPU is visible \(CUDA_VISIBLE_DEVICES={nothing!r}"):
            parse_gpus("all", inherited=nothing)


def test_a_failed_shard_makes_bench_exit_non_zero_and_its_reasons_reach_the_merged_json(tmp_path, monkeypatch, capsys):
    """One shard's benchmark fails (a plugin that breaks every test on "GPU" 1); the other's result is kept, the
    failure is recorded for the gate, and zvperf bench exits 1 instead of passing the merge off as complete."""
    weights = tmp_path / "weights"
    for model in ("zipvoice", "zipvoice_distill"):
        write_official_dir(tiny_weights(model), weights / model)
    (tmp_path / "break_gpu1.py").write_text(
        "import os, pytest\n\n"
        "@pytest.hookimpl(tryfirst=True)\n"
        "def pytest_runtest_call(item):\n"
        "    if os.environ.get('CUDA_VISIBLE_DEVICES') == '1':\n"
        "        pytest.fail('this GPU broke (a fake failure)')\n"
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "merged.json"
    code = main(
        ["bench", "--gpus", "0,1", "--output", str(out), "--", "-p", "no:cacheprovider", "-p", "break_gpu1",
         "--zv-device=cpu", f"--zv-weights={weights}", "--zv-steps=1", "-k", "solver", "--zv-rounds=2", "--zv-warmup=0"]
    )  # fmt: skip
    assert code == 1
    captured = capsys.readouterr()
    assert "1 benchmarks from 2 shard(s)" in captured.out
    assert "zvperf bench: shard failed on GPU 1 (pytest exit 1:" in captured.err
    merged = json.loads(out.read_text())
    assert [b["param"] for b in merged["benchmarks"]] == ["zipvoice-1step-torch-fp32"]
    assert merged["zvperf"]["unmeasured"]["zipvoice_distill-1step-torch-fp32 solver"] == {
        "outcome": "failed",
        "reason": "this GPU broke (a fake failure)",
    }


def test_a_shard_stopped_before_it_saved_is_left_out_and_a_corrupt_one_named(tmp_path):
    """pytest-benchmark creates its JSON file when it starts and fills it at the end: a shard killed in between
    leaves an empty file, which is no results rather than a crash of the merge."""
    saved = tmp_path / "0.json"
    saved.write_text(json.dumps({"machine_info": {"zvperf": {"hardware_key": "nvidia-h100"}}, "benchmarks": []}))
    stopped = tmp_path / "1.json"
    stopped.touch()
    assert merge([saved, stopped])["machine_info"]["zvperf"]["hardware_key"] == "nvidia-h100"
    with pytest.raises(ZvperfError, match="no shard wrote results"):
        merge([stopped])
    stopped.write_text('{"machine_info": ')
    with pytest.raises(ZvperfError, match=r"1\.json: not valid JSON"):
        merge([saved, stopped])
