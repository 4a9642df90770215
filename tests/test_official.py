"""The ZipVoice checkout as the system under test: its own code, loaded by its own loader, timed on every row and
verified against zvperf's torch fp32 output; no checkout, a folder that is none, a checkout whose import fails, a
model folder it cannot load and a commit that changes the output each said in one sentence. These run the real
official code (the pinned snapshot, or ZVPERF_ZIPVOICE) in a git repository the tests make from a copy."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import BENCHMARKS, git
from tests.gate_data import bench, write_results
from tests.helpers import tiny_config
from zvperf.backends import BackendUnavailable, check_runnable, get_backend
from zvperf.backends.checkout import ENV, open_checkout
from zvperf.cli import main
from zvperf.engine.precision import relative_error
from zvperf.engine.weights import synthetic_model
from zvperf.errors import ZvperfError
from zvperf.gate import baselines, judge
from zvperf.gate.config import GateConfig
from zvperf.report.render import Request, build
from zvperf.results.schema import load_results
from zvperf.suite.matrix import parse_combo

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
    result.stdout.fnmatch_lines(["*SKIPPED*no ZipVoice checkout to run*--zv-zipvoice=PATH*"])


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


DECODER_CALL = (
    "            vt = self.fm_decoder(\n"
    "                x=xt, t=t, padding_mask=padding_mask, guidance_scale=guidance_scale\n"
    "            )\n"
)


def commit_change(checkout: Path, change, message: str) -> str:
    """``change(source)`` applied to the checkout's zipvoice/models/zipvoice.py and committed: the new commit."""
    model = checkout / "zipvoice" / "models" / "zipvoice.py"
    source = model.read_text()
    changed = change(source)
    assert changed != source
    model.write_text(changed)
    git(checkout, "commit", "-q", "-am", message)
    return git(checkout, "rev-parse", "HEAD")


def test_zvperf_confirm_between_two_zipvoice_commits(run_official, checkout_copy, tmp_path, capsys, monkeypatch):
    """Two commits of the user's ZipVoice, A/B under one zvperf: one that runs the distilled decoder four times per
    evaluation fails with its commit named; one that changes a comment passes. One torch thread, as in
    tests/test_confirm.py (two threads on two busy cores wait at every barrier), and a threshold of 50% (the
    decoder four times is about +300%, far beyond what six processes' medians a side need; a doubled one, +97%,
    came out at p = 0.015 with three a side on a loaded machine, where processes of identical code have differed
    by tens of percent and rounds spread far past the default 10% IQR limit): what is tested is that the sides
    differ in their checkout alone."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    base = tmp_path / "base"
    git(tmp_path, "clone", "-q", str(checkout_copy), str(base))
    base_commit = git(base, "rev-parse", "HEAD")
    slower = commit_change(checkout_copy, lambda s: s.replace(DECODER_CALL, DECODER_CALL * 4), "decoder 4x")
    comment = tmp_path / "comment"
    git(tmp_path, "clone", "-q", str(base), str(comment))
    commented = commit_change(
        comment, lambda s: s.replace(DECODER_CALL, "            # a comment\n" + DECODER_CALL), "c"
    )
    config = tmp_path / "gate.toml"
    config.write_text("threshold = 0.5\nmax_spread = 10\n")
    args = ["--zv-device=cpu", f"--zv-weights={tmp_path / 'weights'}", "--zv-models=zipvoice_distill",
            "--zv-steps=2", "--zv-backends=official", "--zv-rounds=5", "--zv-warmup=1", "-k", "solver"]  # fmt: skip
    try:
        for head, commit, expected in ((checkout_copy, slower, 1), (comment, commented, 0)):
            result, data = run_official(head, "--zv-backends=official", "-k", "solver", "--zv-rounds=5")
            result.assert_outcomes(passed=1)
            results = tmp_path / "head.json"
            results.write_text(json.dumps(data))
            code = main(
                ["confirm", str(results), "--baselines-dir", str(tmp_path / "no-baselines"), "--gate-config",
                 str(config), "--zipvoice-base", str(base), "--zipvoice-head", str(head), "--", *args]
            )  # fmt: skip
            out = capsys.readouterr().out
            verdict = next(line for line in out.splitlines() if re.match(r"(FAIL|pass|improved|inconclusive) ", line))
            assert code == expected, out
            assert verdict.startswith("FAIL" if expected else ("pass", "improved")), out
            assert f"vs base ZipVoice {base_commit[:12]}" in verdict
            assert f"6 base (ZipVoice {base_commit[:12]}) and 6 head (ZipVoice {commit[:12]})" in verdict
    finally:
        torch.set_num_threads(threads)


def test_confirm_refuses_half_a_pair_of_checkouts_and_a_results_file_without_their_rows(
    tmp_path, capsys, zipvoice_checkout
):
    results = write_results(tmp_path / "zvperf-only.json", [bench("zipvoice_distill-4step-torch-fp32", [0.1] * 5)])
    assert main(["confirm", str(results.path), "--zipvoice-base", str(tmp_path)]) == 2
    assert "--zipvoice-base and --zipvoice-head name the two ZipVoice checkouts: give both" in capsys.readouterr().err
    pair = ["--zipvoice-base", str(zipvoice_checkout), "--zipvoice-head", str(zipvoice_checkout)]
    assert main(["confirm", str(results.path), "--baselines-dir", str(tmp_path), *pair]) == 2
    assert (
        f"{results.path}: no row ran a ZipVoice checkout (run it with --zv-zipvoice=PATH)." in capsys.readouterr().err
    )
    assert main(["confirm", str(results.path), "--baselines-dir", str(tmp_path), *pair[:3], str(tmp_path)]) == 2
    assert f"{tmp_path} is not a ZipVoice checkout" in capsys.readouterr().err


def test_the_gate_says_when_an_official_row_ran_another_zipvoice_commit_than_its_baseline(tmp_path):
    """Only for the rows that ran a checkout: zvperf's own rows do not depend on it."""

    def run(name: str, label: str):
        official = bench("zipvoice_distill-4step-official-fp32", [0.1] * 5, zipvoice={"label": label})
        ours = bench("zipvoice_distill-4step-torch-fp32", [0.1] * 5)
        results = write_results(tmp_path / f"{name}.json", [official, ours])
        document = json.loads(results.path.read_text())
        document["machine_info"]["zvperf"]["zipvoice"] = {"label": label}
        results.path.write_text(json.dumps(document))
        return load_results(results.path)

    baselines.update(tmp_path / "bl", run("base", "aaaaaaaaaaaa"))
    report = judge.compare(run("head", "bbbbbbbbbbbb+dirty"), tmp_path / "bl", GateConfig())
    warned = {v.id: v.warnings for v in report.verdicts}
    assert warned["zipvoice_distill-4step-official-fp32 solver"] == [
        "software differs from the baseline: zipvoice bbbbbbbbbbbb+dirty (baseline aaaaaaaaaaaa)"
    ]
    assert warned["zipvoice_distill-4step-torch-fp32 solver"] == []


def test_the_report_leads_with_zipvoice_as_shipped_beside_zvperf_on_the_same_machine(tmp_path):
    checkout = {"path": "/src/ZipVoice", "commit": "a" * 40, "label": "aaaaaaaaaaaa", "k2": False, "fixes": []}
    own = {"t": 2.0, "t_no_vocoder": 1.5, "t_vocoder": 0.5, "wav_seconds": 4.0, "rtf": 0.5}

    def row(config_id: str, seconds: float, kind: str = "e2e", **extra):
        combo = parse_combo(config_id)
        facts = {"model": combo.model, "num_step": combo.num_step, "backend": combo.backend, "device": "cpu"}
        facts |= {"precision": combo.precision, "frames": 400, "audio_seconds": 4.0, "rtf": seconds / 4.0, "nfe": 4}
        return bench(config_id, [seconds] * 5, kind, **facts, **extra)

    rows = [
        row("zipvoice-16step-official-fp32", 4.0, zipvoice=checkout, official_metrics=own),
        row("zipvoice-16step-official-fp32", 3.0, "solver", zipvoice=checkout),
        row("zipvoice_distill-4step-official-fp32", 1.0, zipvoice=checkout, official_metrics=own),
        row("zipvoice_distill-4step-torch-fp32", 0.5),
        row("zipvoice_distill-4step-torch-bf16", 0.25),
    ]
    path = write_results(tmp_path / "run.json", rows).path
    markdown = build(Request([path], "en"), tmp_path / "report.md").markdown
    assert markdown.index("## ZipVoice as shipped") < markdown.index("## Speed comparison")
    assert "`/src/ZipVoice` at commit `aaaaaaaaaaaa`; k2 absent" in markdown
    assert "| `zipvoice-16step-official-fp32` | 2000.0 | 4000.0 | 0.5000 | 1.00x | - |" in markdown
    assert (
        "| `zipvoice_distill-4step-official-fp32` | 2000.0 | 1000.0 | 0.5000 | 4.00x | "
        "`zipvoice_distill-4step-torch-fp32` 500.0 ms (2.00x faster); `zipvoice_distill-4step-torch-bf16` 250.0 ms "
        "(4.00x faster) |"
    ) in markdown
    plain = write_results(tmp_path / "plain.json", rows[3:]).path
    assert "ZipVoice as shipped" not in build(Request([plain], "en"), tmp_path / "plain.md").markdown
