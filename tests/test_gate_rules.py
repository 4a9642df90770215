"""The gate's hardening on saved results: nothing unjudged passes, the base's baselines win, exact and adjusted
p-values, CPU hardware keys, and the Markdown and JSON reports."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pytest

from tests.gate_data import (
    KEY,
    STORED,
    bench,
    plain,
    spread_rounds,
    store,
    table_cells,
    with_unmeasured,
    write_processes,
    write_results,
)
from zvperf.cli import main
from zvperf.gate import baselines, judge, stats
from zvperf.gate.config import GateConfig, Rule, load_config
from zvperf.gate.formats import render
from zvperf.results.schema import load_results
from zvperf.suite.machine import cpu_identity, hardware_key, parse_cpuinfo

REPO = Path(__file__).parents[1]
A, B, C = "zipvoice_distill-4step-torch-fp32", "zipvoice_distill-2step-torch-fp32", "zipvoice_distill-4step-trt-fp16"


@pytest.fixture
def stored(tmp_path: Path) -> Path:
    """A baseline folder holding three solver benchmarks of KEY, each pooling the gate matrix's processes."""
    return store(tmp_path / "bl", tmp_path / "old.json", [bench(name, spread_rounds(0.1)) for name in (A, B, C)])


def processes_with(path: Path, benchmarks: list[dict], unmeasured: dict[str, dict[str, str]]) -> list:
    """The gate matrix's judged processes of ``benchmarks``, the first recording ``unmeasured`` (what compare reads)."""
    first, *rest = write_processes(path, benchmarks)
    return [with_unmeasured(first, unmeasured), *rest]


def test_a_baseline_entry_the_run_skipped_is_missing_and_fails_with_the_reason_the_run_recorded(
    tmp_path: Path, stored: Path
):
    skipped = {f"{B} solver": {"outcome": "skipped", "reason": "out of memory building"}}
    results = processes_with(tmp_path / "new.json", [bench(A, spread_rounds(0.1))], skipped)
    report = judge.compare(results, stored, GateConfig())
    assert report.failed
    statuses = {v.id: (v.status, v.reason) for v in report.verdicts}
    assert statuses[f"{A} solver"][0] == judge.PASS
    assert statuses[f"{B} solver"] == (
        judge.MISSING,
        "in the baseline but not measured: skipped: out of memory building",
    )
    assert statuses[f"{C} solver"] == (
        judge.NOT_RUN,
        "in the baseline, not asked for by this run: outside its matrix (no result, no skip, no error recorded)",
    )
    assert report.lines()[-1] == (
        "gate FAILED: judged 1 of 3 configurations (0 slower, 0 improved, 1 passed); not judged: 1 missing, "
        "1 not in this run"
    )
    assert f"MISSING       {B} solver on {KEY}: in the baseline but not measured: skipped" in "\n".join(report.lines())


def test_baseline_entries_a_run_did_not_ask_for_are_said_not_failed_unless_every_one_is_required(
    tmp_path: Path, stored: Path
):
    """A partial run (-k solver, or another matrix) is judged on what it measured: the rest of the baseline is
    "not run", which neither passes nor fails; --require-baseline, as CI's gate runs, asks for all of it."""
    deselected = {f"{B} solver": {"outcome": "deselected", "reason": "-k 'not B'"}}
    results = processes_with(tmp_path / "new.json", [bench(A, spread_rounds(0.1))], deselected)
    report = judge.compare(results, stored, GateConfig())
    statuses = {v.id: v.status for v in report.verdicts}
    assert statuses == {f"{A} solver": judge.PASS, f"{B} solver": judge.NOT_RUN, f"{C} solver": judge.NOT_RUN}
    assert not report.failed
    assert report.lines()[-1] == (
        "gate found no slowdown, but could not judge 2 of 3: judged 1 of 3 configurations (0 slower, 0 improved, "
        "1 passed); not judged: 2 not in this run"
    )
    assert f"not run       {B} solver on {KEY}: in the baseline, not asked for by this run: -k 'not B'" in (
        "\n".join(report.lines())
    )
    required = judge.compare(results, stored, GateConfig(), require_baseline=True)
    assert required.failed
    assert (
        "2 configurations of the baseline were not in this run, and --require-baseline asks for every one"
        in (required.lines()[-1])
    )


def test_gate_toml_can_expect_a_configuration_to_be_absent_on_a_hardware_key(tmp_path: Path, stored: Path):
    (stored / "gate.toml").write_text(
        '[[expected_absent]]\nhardware = "cpu-*"\nbenchmarks = ["*-trt-* *", "nothing-else *"]\n'
        'reason = "no TensorRT on a CPU"\n'
    )
    config = load_config(None, stored)
    measured = [bench(A, spread_rounds(0.1)), bench(B, spread_rounds(0.1))]
    skipped = {f"{C} solver": {"outcome": "skipped", "reason": "no CUDA device"}}
    report = judge.compare(processes_with(tmp_path / "new.json", measured, skipped), stored, config)
    assert not report.failed
    absent = report.verdicts[-1]
    assert (absent.status, absent.reason) == (
        judge.ABSENT,
        "expected on cpu-* (no TensorRT on a CPU); the run said skipped: no CUDA device",
    )
    assert report.summary() == (
        "gate passed: judged 2 of 3 configurations (0 slower, 0 improved, 2 passed); not judged: 1 absent as expected"
    )
    assert config.absence("nvidia-h100", f"{C} solver") is None  # another key: expected nowhere else


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[[expected_absent]]\nhardware = 'x'\nbenchmarks = 'y'\nreason = 'z'", 'with hardware = "..."'),
        ("[[expected_absent]]\nhardware = 'x'\nbenchmarks = ['y']\nreason = ''", 'with hardware = "..."'),
        ("[[expected_absent]]\nhardware = 'x'\nbenchmarks = ['y']\nreason = 'z'\nwhy = 1", "unknown key 'why'"),
        ("expected_absent = 3", "'expected_absent' must be tables like [[expected_absent]]"),
    ],
)
def test_bad_expected_absent_entries_are_named(tmp_path: Path, text: str, problem: str):
    (tmp_path / "gate.toml").write_text(text)
    with pytest.raises(Exception, match=problem.replace("[", r"\[").replace(".", r"\.")) as error:
        load_config(None, tmp_path)
    assert str(error.value).startswith(f"gate config {tmp_path / 'gate.toml'}")


def test_errored_and_unverified_benchmarks_fail_with_or_without_a_baseline(tmp_path: Path, stored: Path):
    measured = [bench(A, spread_rounds(0.1)), bench(C, spread_rounds(0.1))]
    unverified = "zipvoice_distill-8step-ort-cpu-fp32 solver"  # no baseline: still a failure
    results = processes_with(
        tmp_path / "new.json",
        measured,
        {
            f"{B} solver": {
                "outcome": "failed",
                "reason": "ort-cpu fp32 differs from torch fp32 by 0.31 (limit 1e-3)",
            },
            unverified: {"outcome": "error", "reason": "RuntimeError: the cold-start process failed"},
            "zipvoice-16step-torch-fp32 solver": {"outcome": "deselected", "reason": "-k distill"},  # nothing to judge
        },
    )
    report = judge.compare(results, stored, GateConfig())
    errored = [v for v in report.verdicts if v.status == judge.ERRORED]
    assert [v.id for v in errored] == [f"{B} solver", unverified]
    assert errored[0].lines() == [
        f"ERROR         {B} solver on {KEY}: failed: ort-cpu fp32 differs from torch fp32 by 0.31 (limit 1e-3)"
    ]
    assert report.failed and len(report.verdicts) == 4
    assert report.summary().endswith("not judged: 2 errored")


def test_require_baseline_fails_without_a_baseline_file_or_without_any_judgement(tmp_path: Path, stored: Path):
    results = write_results(tmp_path / "new.json", [bench(A, spread_rounds(0.1))], key="nvidia-h100")
    assert not judge.compare(results, stored, GateConfig()).failed  # as before: a warning only
    report = judge.compare(results, stored, GateConfig(), require_baseline=True)
    assert report.failed and report.summary().startswith(
        f"gate FAILED (no baseline file {stored / 'nvidia-h100.json'}, required by --require-baseline): judged 0 of 1"
    )
    skipped = write_results(tmp_path / "none.json", [bench(A, spread_rounds(0.1))], key="nvidia-h100")
    skipped = with_unmeasured(skipped, {f"{A} solver": {"outcome": "skipped", "reason": "no CUDA"}}, timed=False)
    assert not skipped.results and not judge.compare(skipped, stored, GateConfig()).failed
    only_new = write_results(tmp_path / "new2.json", [bench("brand-new-1step", spread_rounds(0.1))])
    report = judge.compare(only_new, stored, GateConfig(), require_baseline=True)
    assert "nothing was judged, and --require-baseline asks for a judgement" in report.unmet
    out = tmp_path / "out"
    assert main(["compare", str(results.path), "--baselines-dir", str(stored), "--require-baseline"]) == 1
    assert main(["compare", str(skipped.path), "--baselines-dir", str(out), "--require-baseline"]) == 1


def test_the_base_commits_baselines_and_gate_config_are_used_and_the_heads_edits_named(tmp_path: Path, capsys):
    """The GPU workflow passes --baselines-dir at a checkout of the base commit: a change that loosens gate.toml or
    rewrites its baseline is judged against the base's copies, and the report says its edits were ignored."""
    base, head = tmp_path / "base" / "baselines", tmp_path / "head" / "baselines"
    store(base, tmp_path / "old.json", [bench(A, spread_rounds(0.1))])
    (base / "gate.toml").write_text("threshold = 0.10\n")
    shutil.copytree(base, head)
    (head / "gate.toml").write_text("threshold = 5.0  # the change loosens its own gate\n")
    slow = write_processes(tmp_path / "slow.json", [bench(A, spread_rounds(0.13))], STORED)
    baselines.update(head, *slow)  # ... and makes its slowdown the baseline
    paths = [str(run.path) for run in slow[:3]]
    args = ["compare", *paths, "--baselines-dir", str(base), "--head-baselines-dir", str(head)]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert f"FAIL          {A} solver: median 130.3 ms vs baseline 100.7 ms (+29.4%" in out
    assert (
        f"warning: this change edits {head / f'{KEY}.json'}, {head / 'gate.toml'}: ignored, the gate judges "
        f"against the base commit's copies in {base}"
    ) in out
    assert f"(settings from {base / 'gate.toml'})" in out
    assert main([*args[:6], "--head-baselines-dir", str(base)]) == 1  # the same folder: nothing to say
    assert "this change edits" not in capsys.readouterr().out


def test_exact_p_values_for_10_against_30_rounds_and_the_method_is_named():
    """The Mann-Whitney U test on rounds, the gate's before it tested processes (scripts/process_noise.py)."""
    old = [0.100 + 0.001 * i for i in range(30)]
    new = [0.1255 + 0.001 * i for i in range(10)]  # 4 + 3 + 2 + 1 pairs where an old round is the slower
    test = stats.mann_whitney(new, old, slower=True)
    assert test.method == stats.EXACT
    # Exact: checked against scipy's exact distribution, and unlike the normal approximation scipy picks by default
    # once both samples have more than 8 rounds.
    from scipy.stats import mannwhitneyu

    assert test.p == mannwhitneyu(new, old, alternative="greater", method="exact").pvalue
    assert test.p != pytest.approx(mannwhitneyu(new, old, alternative="greater").pvalue, rel=0.05)
    separated = stats.mann_whitney([0.2 + 0.001 * i for i in range(10)], old, slower=True)
    assert separated.p == pytest.approx(1 / 847660528)  # 1 / C(40, 10): only one split is this extreme
    tied = stats.mann_whitney([0.1, 0.1, 0.2, 0.2, 0.3], [0.1, 0.2, 0.2, 0.3, 0.3], slower=False)
    assert tied.method == stats.PERMUTATION_EXACT
    big = stats.mann_whitney([float(i) for i in range(200)], [i + 0.5 for i in range(200)], slower=True)
    assert big.method == stats.NORMAL


def test_the_gate_tests_the_processes_medians_with_the_exact_mann_whitney_u(tmp_path: Path):
    """Rounds pooled on each side, the medians of their processes tested: 3 judged against 8 stored."""
    old = [0.100 + 0.001 * i for i in range(30)]
    new = [0.1255 + 0.001 * i for i in range(10)]
    judged = write_processes(tmp_path / "new.json", [bench(A, new)])
    wide = GateConfig(Rule(max_spread=1.0))  # the stored rounds spread 13% of their median
    report = judge.compare(judged, _stored_with(tmp_path, [bench(A, old)]), wide)
    (verdict,) = report.verdicts
    from scipy.stats import mannwhitneyu

    medians = [r.results[0].median for r in judged]
    stored = [statistics.median(old) * (1 + 0.002 * i) for i in range(STORED)]
    expected = mannwhitneyu(medians, stored, alternative="greater", method="exact").pvalue
    assert expected == pytest.approx(1 / 165)  # every judged median above every stored one: the test's floor
    assert verdict.method == stats.EXACT and verdict.rounds == (30, 50) and verdict.processes == (3, STORED)
    assert verdict.p == pytest.approx(expected) and verdict.status == judge.FAIL
    assert (
        f"{judge.p_text(expected)} exact, {judge.p_text(expected, 'p_adj')}, processes=3/8, n=30/50" in verdict.message
    )
    # One process on either side cannot be judged, whatever its change: never a pass.
    alone = judge.compare(judged[:1], _stored_with(tmp_path / "same", [bench(A, new)]), GateConfig())
    (verdict,) = alone.verdicts
    assert (verdict.status, verdict.processes, verdict.p) == (judge.INCONCLUSIVE, (1, STORED), None)
    assert verdict.reason == (
        "one process cannot be judged: with 1/8 processes (new/baseline) a side's drift cannot be told from a change, "
        "and the test on the processes' medians needs 2 a side"
    )
    # Nor can three against three, however much slower: the exact test's smallest p there is 1/20.
    three = tmp_path / "three"
    three.mkdir()
    few = judge.compare(judged, store(three / "stored", three / "stored.json", [bench(A, old)], count=3), wide)
    (verdict,) = few.verdicts
    assert (verdict.status, verdict.processes, verdict.p) == (judge.INCONCLUSIVE, (3, 3), pytest.approx(0.05))
    assert verdict.reason == (
        "3/3 processes (new/baseline) cannot be judged: the exact test on their medians gives p = 0.05 at the least, "
        "not below alpha 0.01; run more processes"
    )
    assert few.lines()[-1].startswith("gate found no slowdown, but could not judge 1 of 1 (1 with too few processes")
    assert stats.process_test([1.2, 1.1], [1.0, 1.05], slower=True) == stats.RankTest(pytest.approx(1 / 6), stats.EXACT)
    assert stats.process_test([1.0, 1.0], [1.0, 1.0], slower=True) == stats.RankTest(1.0, stats.PERMUTATION_EXACT)
    assert stats.process_test([1.0], [1.0, 1.1], slower=True) is None


def _stored_with(tmp_path: Path, rounds: list[dict]) -> Path:
    tmp_path.mkdir(exist_ok=True)
    return store(tmp_path / "stored", tmp_path / "stored.json", rounds)


def test_benjamini_hochberg_adjusts_every_p_value_of_a_run_and_the_threshold_still_applies(tmp_path: Path):
    assert stats.benjamini_hochberg([0.01, 0.02, 0.03, 0.2, 0.001]) == pytest.approx(
        [0.025, 0.02 * 5 / 3, 0.0375, 0.2, 0.005]
    )
    # Five benchmarks 20% slower, each of their three processes above the eight stored: the exact p = 1/165 each.
    # Alone or adjusted over five they fail ...
    old = [2.95, 2.98, 3.00, 3.02, 3.05, 3.08, 3.34]
    new = [3.31, 3.32, 3.33, 3.61, 3.62, 3.63, 3.64]
    names = [f"m{i}-1step" for i in range(5)]
    stored = _stored_with(tmp_path, [bench(n, old) for n in names] + [bench(f"same{i}", old) for i in range(20)])
    run = [bench(n, new) for n in names] + [bench(f"same{i}", old[::-1]) for i in range(20)]
    report = judge.compare(write_processes(tmp_path / "run.json", run, step=0.03), stored, GateConfig())
    slower = [v for v in report.verdicts if v.id.startswith("m")]
    p = slower[0].p
    assert p == pytest.approx(1 / 165) and all(v.p == pytest.approx(p) for v in slower)
    # ... but among 25 tests (20 unchanged) their adjusted p is 25/5 times larger: above alpha 0.01.
    assert all(v.p_adjusted == pytest.approx(p * 25 / 5) for v in slower)
    assert {(v.status, v.reason) for v in slower} == {
        (judge.INCONCLUSIVE, "slower than the 10% threshold but not significant (alpha 0.01)")
    }
    assert {v.status for v in report.verdicts[5:]} == {judge.PASS}
    loose = _stored_with(tmp_path / "loose", [bench(n, old) for n in names])
    few = write_processes(tmp_path / "few.json", [bench(n, new) for n in names], step=0.03)
    tighter = judge.compare(few, loose, GateConfig())
    assert [v.p_adjusted for v in tighter.verdicts] == pytest.approx([p] * 5)
    assert {v.status for v in tighter.verdicts} == {judge.FAIL}


def test_markdown_and_json_reports(tmp_path: Path, stored: Path, capsys):
    telemetry = {
        "gpu": {
            "available": True,
            "sm_clock_mhz_median": 1980.0,
            "temperature_c_max": 61.0,
            "throttled": False,
            "clock_event_reasons": [],
        }
    }
    skipped = {f"{B} solver": {"outcome": "skipped", "reason": "a | in the reason"}}
    results = processes_with(tmp_path / "new.json", [bench(A, spread_rounds(0.125), telemetry=telemetry)], skipped)
    paths = [str(run.path) for run in results]
    assert main(["compare", *paths, "--baselines-dir", str(stored), "--format", "md"]) == 1
    md = capsys.readouterr().out
    lines = md.splitlines()
    assert lines[0] == f"### zvperf gate on `{KEY}`: FAILED"
    assert plain(lines[2]).startswith("gate FAILED: judged 1 of 3 configurations (1 slower, 0 improved, 0 passed)")
    header = "| benchmark | median | reference | change | p (method) | p adjusted | processes (rounds) | verdict | "
    assert header + "GPU clock, temperature, throttling |" in lines
    rows = {cells[0]: cells for cells in map(table_cells, lines) if cells}
    assert rows[f"`{A} solver`"][1:4] == ["125.2 ms", "100.7 ms (baseline)", "+24.4%"]
    assert rows[f"`{A} solver`"][4].endswith("(exact)") and rows[f"`{A} solver`"][6:8] == ["3/8 (21/50)", "**FAIL**"]
    assert plain(rows[f"`{A} solver`"][8]) == "1980 MHz, 61 C, not throttled"
    # The missing ones fail too: in the same table, above the fold, a pipe in a reason kept inside its cell.
    missing = plain(rows[f"`{B} solver`"][7])
    assert missing == "**MISSING**: in the baseline but not measured: skipped: a | in the reason"
    # What the run did not ask for neither fails nor passes: folded with the rest.
    assert plain(rows[f"`{C} solver`"][7]).startswith("not run: in the baseline, not asked for by this run")
    assert md.index("<details>") < md.index(f"`{C} solver`")
    assert main(["compare", *paths, "--baselines-dir", str(stored), "--format", "json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["failed"] and document["judged"] == 1 and document["hardware_key"] == KEY
    first = document["verdicts"][0]
    assert first["status"] == "fail" and first["method"] == "exact" and first["failing"]
    assert first["p_adjusted"] == pytest.approx(first["p"]) and first["rounds"] == [21, 50]
    assert first["processes"] == [3, 8]
    assert render(judge.compare(results, stored, GateConfig()), "md") == md


CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 avx avx2 fma smep {extra}

processor\t: 1
vendor_id\t: AuthenticAMD
"""
AVX512 = "avx512f avx512bw avx512vl avx512dq avx512cd"


def test_cpu_hardware_keys_tell_isa_levels_and_generic_names_apart():
    avx2 = parse_cpuinfo(CPUINFO.format(extra=""), 2)
    avx512 = parse_cpuinfo(CPUINFO.format(extra=AVX512), 2)
    assert avx2.key == "cpu-amd-epyc-f25m17-avx2-2c"
    assert avx512.key == "cpu-amd-epyc-f25m17-avx512-2c"  # the only difference: AVX-512
    assert parse_cpuinfo(CPUINFO.format(extra=f"{AVX512} avx512_bf16"), 2).isa == "avx512-bf16"
    assert parse_cpuinfo(CPUINFO.format(extra=f"{AVX512} avx512_bf16 amx_tile amx_bf16"), 2).isa == "amx"
    assert parse_cpuinfo(CPUINFO.format(extra="").replace("avx2 fma", ""), 8).key == "cpu-amd-epyc-f25m17-baseline-8c"
    named = CPUINFO.replace("AMD EPYC", "AMD EPYC 9654 96-Core Processor").format(extra=AVX512)
    assert parse_cpuinfo(named, 4).key == "cpu-amd-epyc-9654-avx512-4c"  # a model number: no family needed
    intel = CPUINFO.replace("AuthenticAMD", "GenuineIntel").replace("AMD EPYC", "Common KVM processor")
    assert parse_cpuinfo(intel.format(extra=""), 2).key == "cpu-intel-common-kvm-processor-f25m17-avx2-2c"
    assert avx2.isa_flags == ["avx", "avx2", "fma", "sse", "sse2"]  # not smep: a vector-free flag
    # This machine: the same key every time, and the one its results are filed under.
    assert cpu_identity() == cpu_identity() and hardware_key("cpu") == cpu_identity().key


def test_a_baseline_whose_key_matches_but_whose_cpu_flags_differ_is_warned_about(tmp_path: Path):
    old = write_results(tmp_path / "old.json", [bench(A, spread_rounds(0.1))])
    document = json.loads(old.path.read_text())
    document["machine_info"]["zvperf"]["cpu_flags"] = ["avx", "avx2", "fma"]
    old.path.write_text(json.dumps(document))
    baselines.update(tmp_path / "bl", load_results(old.path))
    assert json.loads((tmp_path / "bl" / f"{KEY}.json").read_text())["machine"]["cpu_flags"] == ["avx", "avx2", "fma"]
    document["machine_info"]["zvperf"]["cpu_flags"] = ["avx", "avx2", "avx512f", "fma"]
    old.path.write_text(json.dumps(document))
    report = judge.compare(load_results(old.path), tmp_path / "bl", GateConfig())
    assert report.warnings == [
        "this CPU's flags differ from the baseline machine's (+avx512f): same key, other hardware?"
    ]
    document["machine_info"]["zvperf"]["cpu_flags"] = ["avx", "avx2", "fma"]
    old.path.write_text(json.dumps(document))
    assert judge.compare(load_results(old.path), tmp_path / "bl", GateConfig()).warnings == []


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).parents[1] / "baselines").glob("cpu-*.json")), ids=lambda path: path.stem
)
def test_each_committed_cpu_baseline_is_filed_under_the_key_of_the_cpu_it_records(path: Path):
    """The key recomputed from the CPU facts stored with the baseline (name, family, model, flags, cores: what
    pytest-benchmark's machine_info recorded on the machine that measured it) is its file name."""
    stored = baselines.read(path)
    assert stored is not None
    machine = stored.machine
    vendor = "GenuineIntel" if machine["cpu"].startswith("Intel") else "AuthenticAMD"
    text = (
        f"vendor_id\t: {vendor}\ncpu family\t: {machine['cpu_family']}\nmodel\t\t: {machine['cpu_model_number']}\n"
        f"model name\t: {machine['cpu']}\nflags\t\t: {' '.join(machine['cpu_flags'])}\n"
    )
    assert parse_cpuinfo(text, machine["cpu_cores"]).key == stored.hardware_key == path.stem


def test_the_avx2_baseline_is_of_an_avx2_machine_and_the_cpu_reports_have_a_baseline_of_theirs():
    """One baseline from an AVX2-only AMD EPYC (Zen 3), judged apart from the machines that measured reports/cpu
    (an AVX-512 Zen 5, an AMX Xeon), whose keys have baseline files of their own."""
    root = Path(__file__).parents[1]
    stored = baselines.read(root / "baselines" / "cpu-amd-epyc-f25m1-avx2-2c.json")
    assert stored is not None
    assert stored.machine["cpu_isa"] == "avx2" and "avx512f" not in stored.machine["cpu_flags"]
    for report in (root / "reports" / "cpu").glob("*.json"):
        key = json.loads(report.read_text())["machine_info"]["zvperf"]["hardware_key"]
        assert key != stored.hardware_key and (root / "baselines" / f"{key}.json").is_file(), report.name


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).parents[1] / "reports").glob("*/*.json")),
    ids=lambda path: f"{path.parent.name}/{path.name}",
)
def test_each_committed_results_file_passes_or_is_inconclusive_against_the_committed_baseline(path: Path):
    """Unchanged runs (the committed measurements) never fail the gate of the committed baselines: a false
    failure there would be one in CI. Rows they did not ask for are said, not failed."""
    results = load_results(path)
    root = Path(__file__).parents[1]
    report = judge.compare(results, root / "baselines", load_config(None, root / "baselines"))
    assert not report.failed, "\n".join(v.lines()[0] for v in report.verdicts if v.failing)


def test_a_cuda_run_without_a_gpu_is_not_judged_against_this_cpus_baseline(pytester: pytest.Pytester, tmp_path: Path):
    """Every benchmark of such a run skips (tox -e bench-gpu on a CPU machine); keyed to the CPU, the CPU's own
    baseline would read as all missing and fail the gate."""
    import torch

    from tests.helpers import run_tiny_benchmarks
    from zvperf.suite.machine import NO_GPU_KEY

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    assert hardware_key("cuda") == NO_GPU_KEY != hardware_key("cpu")
    stored = f"--zv-baselines-dir={tmp_path / 'baselines'}"
    result, _ = run_tiny_benchmarks(pytester, tmp_path / "weights", stored, "--zv-update-baseline", "--zv-warmup=0")
    assert result.ret == pytest.ExitCode.OK and baselines.hardware_keys(tmp_path / "baselines") == [hardware_key("cpu")]
    result, _ = run_tiny_benchmarks(pytester, tmp_path / "weights", stored, "--zv-gate", "--zv-device=cuda")
    outcomes = result.parseoutcomes()
    assert outcomes.get("skipped") and "passed" not in outcomes and "failed" not in outcomes
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([f"*no baseline file for this hardware ({NO_GPU_KEY})*"])
