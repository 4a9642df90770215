"""The official implementation as a row: skipped with the reason where its package is absent, agreeing with zvperf
where it is importable (a clone of k2-fsa/ZipVoice on PYTHONPATH, and tensorboard)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from tests.helpers import CASE_DIRS, run_tiny_benchmarks, tiny_config, tiny_weights, write_official_dir
from zvperf.backends import BackendUnavailable, check_runnable, get_backend
from zvperf.engine.precision import relative_error
from zvperf.engine.weights import synthetic_model
from zvperf.errors import ZvperfError

BENCHMARKS = (CASE_DIRS[0].parents[2] / "test_benchmarks.py").read_text()


def official_reason() -> str | None:
    try:
        from zvperf.backends.official import official_class

        official_class("zipvoice_distill")
    except ZvperfError as exc:
        return str(exc)
    return None


needs_official = pytest.mark.skipif(official_reason() is not None, reason=str(official_reason()))


@pytest.fixture
def without(monkeypatch):
    """Make the named top-level packages look absent (as on a machine without them)."""

    def hide(*names: str) -> None:
        real = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util, "find_spec", lambda name, *a: None if name.split(".")[0] in names else real(name, *a)
        )

    return hide


def test_without_the_official_package_the_backend_says_how_to_get_it(without):
    without("zipvoice")
    with pytest.raises(BackendUnavailable, match=r"official ZipVoice package is not importable \(clone .*PYTHONPATH"):
        check_runnable(get_backend("official"), "cpu", "fp32")


def test_without_tensorboard_the_backend_says_the_official_code_needs_it(without):
    if importlib.util.find_spec("zipvoice") is None:
        pytest.skip("the official package is absent here: the reason is about it, not tensorboard")
    without("tensorboard")
    with pytest.raises(BackendUnavailable, match="imports torch.utils.tensorboard: pip install tensorboard"):
        check_runnable(get_backend("official"), "cpu", "fp32")


def test_the_official_row_skips_with_its_reason_where_the_package_is_absent(pytester, tmp_path, without):
    without("zipvoice")
    root = tmp_path / "weights"
    write_official_dir(tiny_weights("zipvoice_distill"), root / "zipvoice_distill")
    pytester.makepyfile(test_benchmarks=BENCHMARKS)
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--benchmark-only", "--zv-device=cpu", f"--zv-weights={root}",
        "--zv-models=zipvoice_distill", "--zv-steps=1", "--zv-backends=official", "--zv-rounds=1", "--zv-warmup=0",
        "-rs", "-k", "solver",
    )  # fmt: skip
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*SKIPPED*the official ZipVoice package is not importable*"])


@needs_official
@pytest.mark.parametrize("model_name", ["zipvoice", "zipvoice_distill"])
def test_the_official_solve_agrees_with_zvperf_on_the_same_weights(model_name):
    model, _ = synthetic_model(model_name, config=tiny_config())
    solver = get_backend("official").prepare(model, "cpu", "fp32")
    generator = torch.Generator().manual_seed(0)
    x0, text, speech = (torch.randn(2, 97, model.feat_dim, generator=generator) for _ in range(3))
    padding = torch.zeros(2, 97, dtype=torch.bool)
    padding[1, 70:] = True
    guidance = model.default_guidance_scale
    for mask in (None, padding):
        with torch.inference_mode():
            ours = model.solve(x0, text, speech, mask, 4, guidance)
        theirs = solver(x0, text, speech, mask, 4, guidance)
        valid = None if mask is None else ~mask[..., None].expand_as(ours)
        assert relative_error(theirs, ours, valid) <= 1e-4


@needs_official
def test_the_official_row_is_verified_then_timed(pytester, tmp_path):
    result, out = run_tiny_benchmarks(pytester, tmp_path / "weights", "--zv-backends=official", "--zv-warmup=0")
    result.assert_outcomes(passed=1)
    (bench,) = json.loads(out.read_text())["benchmarks"]
    assert bench["extra_info"]["backend"] == "official" and bench["extra_info"]["verified_error"] <= 1e-4
