"""The ZipVoice checkout as the system under test: its own code, loaded by its own loader, timed on every row and
verified against zvperf's torch fp32 output; no checkout, a folder that is none, a checkout whose import fails, a
model folder it cannot load and a commit that changes the output each said in one sentence. These run the real
official code (the pinned snapshot, or ZVPERF_ZIPVOICE) in a git repository the tests make from a copy."""

from __future__ import annotations

import importlib.util
import shutil

import pytest
import torch

from tests.conftest import BENCHMARKS, git
from tests.helpers import tiny_config
from zvperf.backends import BackendUnavailable, check_runnable, get_backend
from zvperf.backends.checkout import ENV, open_checkout
from zvperf.engine.precision import relative_error
from zvperf.engine.weights import synthetic_model
from zvperf.errors import ZvperfError

KINDS = ("solver", "e2e", "text_encoder", "vocoder", "cold_start")


def official_rows(data: dict) -> dict[str, dict]:
    return {b["name"]: b["extra_info"] for b in data["benchmarks"] if b["extra_info"]["backend"] == "official"}


def test_every_row_of_the_checkout_is_its_own_code_verified_and_names_its_commit(run_official, zipvoice_checkout):
    result, data = run_official(zipvoice_checkout, "--zv-backends=torch,official")
    result.assert_outcomes(passed=2 * len(KINDS))
    commit = git(zipvoice_checkout, "rev-parse", "HEAD")
    rows = official_rows(data)
    assert sorted(info["kind"] for info in rows.values()) == sorted(KINDS)
    for name, info in rows.items():
        assert info["zipvoice"]["commit"] == commit and info["zipvoice"]["dirty"] is False, name
        assert info["zipvoice"]["path"] == str(zipvoice_checkout.resolve()) and "torch" in info["zipvoice"]["versions"]
        assert info["weights"] == "local", name  # tiny random weights in a folder
        if info["kind"] != "cold_start":  # the script's own noise draw: its length is what is compared
            assert info["verified_error"] is not None and info["verified_error"] <= 1e-3, name
    e2e = rows["test_e2e[zipvoice_distill-2step-official-fp32]"]
    assert set(e2e["official_metrics"]) == {"t", "t_no_vocoder", "t_vocoder", "wav_seconds", "rtf"}
    assert e2e["official_metrics"]["t_vocoder"] < e2e["official_metrics"]["t"]
    assert data["machine_info"]["zvperf"]["zipvoice"]["commit"] == commit
    # zvperf's own rows beside them carry no checkout.
    assert all("zipvoice" not in b["extra_info"] for b in data["benchmarks"] if b["extra_info"]["backend"] == "torch")


def test_naming_a_checkout_adds_its_rows_to_the_matrix(run_official, zipvoice_checkout):
    result, _ = run_official(zipvoice_checkout, "--collect-only", "-q")
    collected = "\n".join(result.outlines)
    assert "test_solver[zipvoice_distill-2step-torch-fp32]" in collected
    assert "test_solver[zipvoice_distill-2step-official-fp32]" in collected


def test_a_commit_that_changes_the_output_fails_its_rows_with_the_difference(run_official, checkout_copy):
    model = checkout_copy / "zipvoice" / "models" / "zipvoice.py"
    source = model.read_text()
    # The text encoder's output a little larger: a numerical change a refactoring could make.
    changed = source.replace(
        "        return text_condition, padding_mask\n", "        return text_condition * 1.01, padding_mask\n"
    )
    assert changed != source
    model.write_text(changed)
    result, data = run_official(checkout_copy, "--zv-backends=official", "-k", "text_encoder")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*zipvoice_distill-official-fp32: its text condition differs from zvperf's torch fp32 by *, above the fp32 "
         "tolerance 1e-04: not timed*"]
    )  # fmt: skip
    unmeasured = data["zvperf"]["unmeasured"]["zipvoice_distill-official-fp32 text_encoder"]
    assert unmeasured["outcome"] == "failed" and "differs from zvperf's torch fp32" in unmeasured["reason"]
    assert open_checkout(checkout_copy).label.endswith("+dirty")


def test_a_checkout_whose_import_fails_fails_its_rows_in_one_sentence(run_official, checkout_copy):
    (checkout_copy / "zipvoice" / "models" / "zipvoice.py").write_text("def broken(:\n")
    result, _ = run_official(checkout_copy, "--zv-backends=official", "-k", "text_encoder")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [f"*importing zipvoice.bin.infer_zipvoice from the ZipVoice checkout {checkout_copy} failed (SyntaxError: *"]
    )


def test_a_model_folder_the_checkout_cannot_load_fails_its_rows(run_official, checkout_copy, tiny_dir):
    """A commit that renames a parameter: its own loader cannot load the folder (as it could not load the published
    checkpoints), and its rows say so."""
    model = checkout_copy / "zipvoice" / "models" / "zipvoice.py"
    source = model.read_text()
    model.write_text(source.replace("self.embed = ", "self.token_embed = ").replace("self.embed(", "self.token_embed("))
    result, _ = run_official(checkout_copy, "--zv-backends=official", "-k", "text_encoder")
    result.assert_outcomes(failed=1)
    folder = tiny_dir / "zipvoice_distill"
    said = f"*the ZipVoice checkout {checkout_copy} (*+dirty) cannot load the model folder {folder}: *token_embed*"
    result.stdout.fnmatch_lines([said])


def test_a_folder_that_is_not_a_checkout_is_a_usage_error(run_official, tmp_path):
    result, _ = run_official(tmp_path, "--zv-backends=official")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{tmp_path} is not a ZipVoice checkout: it has no zipvoice/models/zipvoice.py.*"])
    result, _ = run_official(tmp_path / "absent", "--zv-backends=official")
    result.stderr.fnmatch_lines([f"*ZipVoice checkout {tmp_path / 'absent'}: no such folder.*"])


@pytest.fixture
def without(monkeypatch, checkout_env):
    """Make the named top-level packages look absent (as on a machine without them), and no checkout named."""

    def hide(*names: str) -> None:
        real = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util, "find_spec", lambda name, *a: None if name.split(".")[0] in names else real(name, *a)
        )

    return hide


def test_without_a_checkout_the_official_rows_skip_saying_how_to_get_one(without, pytester, tiny_dir):
    without("zipvoice")
    with pytest.raises(BackendUnavailable, match=r"no ZipVoice checkout to run \(clone https://github.com/k2-fsa"):
        check_runnable(get_backend("official"), "cpu", "fp32")
    pytester.makepyfile(test_benchmarks=BENCHMARKS)
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--benchmark-only", "--zv-device=cpu", f"--zv-weights={tiny_dir}",
        "--zv-models=zipvoice_distill", "--zv-steps=1", "--zv-backends=official", "--zv-rounds=1", "--zv-warmup=0",
        "-rs", "-k", "solver",
    )  # fmt: skip
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*SKIPPED*no ZipVoice checkout to run*--zv-zipvoice PATH*"])


@pytest.mark.parametrize("model_name", ["zipvoice", "zipvoice_distill"])
def test_the_official_solve_agrees_with_zvperf_on_the_same_weights(
    model_name, zipvoice_checkout, checkout_env, monkeypatch
):
    monkeypatch.setenv(ENV, str(zipvoice_checkout))
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


def test_a_checkout_records_its_commit_and_uncommitted_changes(checkout_copy, tmp_path):
    clean = open_checkout(checkout_copy)
    assert clean.commit == git(checkout_copy, "rev-parse", "HEAD") and clean.dirty is False
    assert clean.label == clean.commit[:12] and clean.cache_key == clean.commit[:12]
    (checkout_copy / "zipvoice" / "models" / "zipvoice.py").write_text("# changed\n")
    dirty = open_checkout(checkout_copy)
    assert dirty.dirty is True and dirty.label == f"{clean.commit[:12]}+dirty"
    assert dirty.cache_key.startswith(f"{clean.commit[:12]}-dirty-") and dirty.cache_key != clean.cache_key
    plain = tmp_path / "copy"
    shutil.copytree(checkout_copy / "zipvoice", plain / "zipvoice")
    assert open_checkout(plain).label == "not a git checkout"
    with pytest.raises(ZvperfError, match="is not a ZipVoice checkout"):
        open_checkout(tmp_path)
