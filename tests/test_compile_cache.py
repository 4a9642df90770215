"""The compile backend's kernels kept between processes (zvperf.backends.compile_cache)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import WAIT_S, tiny_config
from zvperf.backends import compile_cache
from zvperf.engine.weights import synthetic_model

ROOT = Path(__file__).parents[1]


def test_the_cache_file_is_named_by_what_the_generated_code_depends_on(monkeypatch, tmp_path):
    monkeypatch.setenv("ZVPERF_CACHE", str(tmp_path))
    model, _ = synthetic_model("zipvoice_distill", config=tiny_config())
    path = compile_cache.cache_file(model, "cpu", "fp32")
    assert path.parent == tmp_path / "compile" and path.name.startswith("zipvoice_distill-fp32-")
    assert compile_cache.cache_file(model, "cpu", "fp32") == path  # the same inputs, the same file
    assert compile_cache.cache_file(model, "cpu", "bf16") != path
    other, _ = synthetic_model("zipvoice_distill", config=dataclasses.replace(tiny_config(), fm_decoder_dim=32))
    assert compile_cache.cache_file(other, "cpu", "fp32").name != path.name
    code = tmp_path / "zipformer.py"
    code.write_text("# the model's code, edited\n")
    monkeypatch.setattr(compile_cache, "_TRACED_CODE", (*compile_cache._TRACED_CODE, code))
    assert compile_cache.cache_file(model, "cpu", "fp32") != path
    monkeypatch.setattr(compile_cache, "device_architecture", lambda device: "another CPU")
    assert compile_cache.cache_file(model, "cpu", "fp32").name != path.name


def test_without_a_kept_file_nothing_is_loaded(tmp_path):
    assert compile_cache.load(tmp_path / "absent.bin") is False


# One process: the decoder of one Zipformer stack compiled by the compile backend (Inductor), one solve; prints
# whether the kept file exists and Inductor's cache counters.
SOLVE_ONCE = """
import dataclasses, json, sys
import torch
from torch._dynamo.utils import counters
sys.path.insert(0, sys.argv[1])
from tests.helpers import tiny_config
from zvperf.backends.compiled import Compiled
from zvperf.engine.weights import synthetic_model
config = dataclasses.replace(
    tiny_config(), fm_decoder_downsampling_factor=(1,), fm_decoder_num_layers=(1,), fm_decoder_cnn_module_kernel=(15,)
)
model, _ = synthetic_model("zipvoice_distill", config=config)
solver = Compiled().prepare(model, "cpu", "fp32")
inputs = torch.randn(2, 1, 50, model.feat_dim, generator=torch.Generator().manual_seed(0))
with torch.inference_mode():
    x1 = solver(inputs[0], inputs[1], torch.zeros_like(inputs[0]), None, 2, 3.0)
    error = (x1 - model.solve(inputs[0], inputs[1], torch.zeros_like(inputs[0]), None, 2, 3.0)).abs().max().item()
print(json.dumps({"kept": solver.kept.is_file(), "inductor": dict(counters["inductor"]), "error": error}))
"""


@pytest.mark.slow
def test_a_second_process_loads_what_the_first_compiled_instead_of_generating_it_again(tmp_path):
    """Both processes start with empty torch caches (as on a new machine), sharing only zvperf's cache: the first
    generates the kernels and keeps them, the second finds every graph in them. (About a minute a process on
    2 cores: Inductor's C++ build of even one stack.)"""

    def solve_once(name: str) -> dict:
        env = {
            **os.environ,
            "ZVPERF_CACHE": str(tmp_path / "zvperf"),
            "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / name / "inductor"),
            "TRITON_CACHE_DIR": str(tmp_path / name / "triton"),
        }
        command = [sys.executable, "-c", SOLVE_ONCE, str(ROOT)]
        # The timeout bounds a hang only.
        completed = subprocess.run(command, capture_output=True, text=True, env=env, check=False, timeout=10 * WAIT_S)
        assert completed.returncode == 0, completed.stderr[-2000:]
        return json.loads(completed.stdout.strip().splitlines()[-1])

    first = solve_once("first")
    assert first["kept"] and first["inductor"].get("fxgraph_cache_miss", 0) > 0
    second = solve_once("second")
    assert second["inductor"].get("fxgraph_cache_hit", 0) == first["inductor"]["fxgraph_cache_miss"]
    assert second["inductor"].get("fxgraph_cache_miss", 0) == 0
    assert first["error"] < 1e-4 and second["error"] < 1e-4  # the loaded kernels compute what eager does
