"""The history: appends (compact, atomic, locked, once per run), bad files, and ``zvperf history show`` finding a
known step at its commit, a known drift, and the regressions standing since a release tag.

The synthetic history (tests/history_data.py) has 40 commits: a 10% step at commit 23 in one configuration, a
0.3%-per-commit drift in another, a flat one with runs flagged noisy and throttled, all with 1% noise.
"""

from __future__ import annotations

import json
import os
import random
import re
import statistics
import subprocess
from pathlib import Path

import pytest

from tests import history_data as synthetic
from tests.gate_data import bench, spread_rounds
from tests.helpers import run_at_once
from zvperf.cli import main
from zvperf.history import store, trends
from zvperf.history.releases import Release, find_release
from zvperf.results.schema import load_results
from zvperf.suite.matrix import PRESETS

STEP_COMMIT = synthetic.commit_id(synthetic.STEP_AT)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic history, recorded with ``zvperf history add``: the history folder."""
    folder = tmp_path_factory.mktemp("history")
    paths = synthetic.write_runs(folder / "results")
    assert main(["history", "add", *map(str, paths), "--history-dir", str(folder / "history")]) == 0
    return folder / "history"


@pytest.fixture
def outside_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in a folder that is no git checkout: no release tag to count regressions from."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def show(capsys: pytest.CaptureFixture[str], history: Path, *options: str) -> dict[str, list[str]]:
    """``zvperf history show``'s output: each benchmark's lines, and the regressions' under "regressions"."""
    assert main(["history", "show", "--history-dir", str(history), *options]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{history / synthetic.KEY}.jsonl: {synthetic.KEY}, ")
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for line in lines[1:]:
        if line.startswith("Regressions standing since"):
            current = sections.setdefault("regressions", [line])
        elif not line.startswith(" "):
            current = sections.setdefault(line.partition(":")[0], [line])
        else:
            current.append(line)
    return sections


def error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run a ``zvperf history`` command expecting a user error: exit 2, one line on stderr."""
    assert main(["history", *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# --- change points, drift, standing regressions ------------------------------------------------------------


def test_show_finds_the_step_at_its_commit_and_nowhere_else(recorded, capsys, outside_git):
    sections = show(capsys, recorded)
    benchmarks = {name for name in sections if name != "regressions"}
    assert benchmarks == {f"{c} {k}" for c in synthetic.CONFIGS for k in ("solver", "e2e")} | {
        "zipvoice_distill-torch-fp32 vocoder"
    }
    for name in benchmarks:
        changes = [line for line in sections[name] if "level changed" in line]
        if name.startswith(synthetic.STEP_CONFIG):
            (change,) = changes
            match = re.search(r"level changed at (\w+) \(2026-01-24\): .* \(\+(\d+\.\d)%, slower\)", change)
            assert match and STEP_COMMIT.startswith(match.group(1)) and 8 <= float(match.group(2)) <= 12, change
        else:
            assert changes == [] and "  no change of level" in sections[name], sections[name]
    # The same through the API: one step, at the step's commit, of about 10%.
    found = {t.benchmark: t for t in trends.trends(store.read(recorded / f"{synthetic.KEY}.jsonl"))}
    for kind in ("solver", "e2e"):
        step = found[f"{synthetic.STEP_CONFIG} {kind}"]
        assert [c.index for c in step.changes] == [synthetic.STEP_AT] and step.changes[0].commit == STEP_COMMIT
        assert step.changes[0].ratio == pytest.approx(synthetic.STEP, abs=0.02)
    assert all(not t.changes for name, t in found.items() if not name.startswith(synthetic.STEP_CONFIG))


def simulated(seed: int, step: float, drift: float) -> list[store.Run]:
    """40 commits, each a run of 10 rounds with 2% noise per round; ``step`` from commit 20 on, ``drift`` per commit."""
    noise = random.Random(seed)
    runs = []
    for k in range(40):
        level = 0.2 * (1 + drift * k) * (1 + step if k >= 20 else 1)
        rounds = sorted(level * (1 + 0.02 * noise.gauss(0, 1)) for _ in range(10))
        measurement = store.Measurement(statistics.median(rounds), 0.0, 10, tuple(rounds))
        configuration = store.Configuration("m", 1, "torch", "fp32", "official", {"solver": measurement})
        when = synthetic.commit_time(k)
        runs.append(store.Run("k", f"c{k:02d}", when, when, {}, {}, {"m-1step-torch-fp32": configuration}))
    return runs


@pytest.mark.parametrize(
    ("step", "drift", "changes", "drifting"),
    [(0.10, 0.0, [20], False), (0.0, 0.0, [], False), (0.0, 0.003, [], True)],
    ids=["step", "flat", "drift"],
)
def test_simulated_histories_get_the_right_change_points_and_drift(step, drift, changes, drifting):
    """The numbers trends.py's docstring quotes, on 100 seeds: all 100 as expected (99 allowed, should a library's
    numerics move by a hair)."""
    found = [trends.trends(simulated(seed, step, drift))[0] for seed in range(100)]
    assert sum([change.index for change in t.changes] == changes for t in found) >= 99
    assert sum(bool(t.drift and t.drift.significant) == drifting for t in found) >= 99


def test_show_reports_the_slow_drift_and_only_it(recorded, capsys, outside_git):
    sections = show(capsys, recorded)
    for name, lines in sections.items():
        if name == "regressions":
            continue
        drift = [line for line in lines if "drift" in line]
        if name.startswith(synthetic.DRIFT_CONFIG):
            (line,) = drift
            match = re.match(
                r"  drifting: \+(\d\.\d\d)% per commit \(95% interval \+(\d\.\d\d)% to \+(\d\.\d\d)%\)", line
            )
            assert match, line
            slope, low, high = (float(x) / 100 for x in match.groups())
            # The data's own slope relative to its first level: 0.3% per commit.
            assert 0.0022 <= slope <= 0.0036 and low <= synthetic.DRIFT <= high + 0.0005, line
        else:
            assert len(drift) == 1 and drift[0].startswith("  no drift ("), drift


def test_the_step_is_the_regression_standing_since_the_start_without_a_release(recorded, capsys, outside_git):
    regressions = show(capsys, recorded)["regressions"]
    assert regressions[0].startswith("Regressions standing since the start of the history (no release tag found")
    assert len(regressions) == 3  # the heading, then solver and end to end
    for line in regressions[1:]:
        assert re.match(rf"  \+\d+\.\d%  {synthetic.STEP_CONFIG} (solver|e2e): since {STEP_COMMIT[:12]} ", line)


def git(repository: Path, *args: str, date: str | None = None) -> None:
    env = {**os.environ, "GIT_COMMITTER_DATE": date or "", "GIT_AUTHOR_DATE": date or ""}
    identity = ["-c", "user.name=zvperf tests", "-c", "user.email=tests@zvperf.invalid"]
    subprocess.run(["git", "-C", str(repository), *identity, *args], check=True, capture_output=True, env=env)


@pytest.fixture
def released(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git checkout (the current folder) tagged v1.0 five days before the step and v2.0 five days after it."""
    repository = tmp_path / "repo"
    repository.mkdir()
    git(repository, "init", "-q")
    for tag, k in (("v1.0", synthetic.STEP_AT - 5), ("v2.0", synthetic.STEP_AT + 5)):
        git(repository, "commit", "-q", "--allow-empty", "-m", tag, date=synthetic.commit_time(k))
        git(repository, "tag", tag)
    monkeypatch.chdir(repository)
    return repository


def test_regressions_are_counted_from_the_latest_tag_or_the_one_named(recorded, capsys, released):
    latest = show(capsys, recorded)["regressions"]
    assert re.match(r"Regressions standing since v2\.0 \(\w{12}, 2026-01-29\): none of 5% or more\.", latest[0])
    named = show(capsys, recorded, "--since", "v1.0")["regressions"]
    assert re.match(r"Regressions standing since v1\.0 \(\w{12}, 2026-01-19\), largest first:", named[0])
    assert len(named) == 3 and all(f"since {STEP_COMMIT[:12]}" in line for line in named[1:])


def test_since_none_counts_from_the_start_of_the_history_whatever_the_tags(recorded, capsys, released):
    """The help's "none: from the start of the history": the step before both tags stands again."""
    regressions = show(capsys, recorded, "--since", "none")["regressions"]
    assert regressions[0] == "Regressions standing since the start of the history (--since none), largest first:"
    assert len(regressions) == 3 and all(f"since {STEP_COMMIT[:12]}" in line for line in regressions[1:])


def test_a_release_whose_commit_was_measured_is_found_by_its_id(recorded):
    runs = store.read(recorded / f"{synthetic.KEY}.jsonl")
    measured = synthetic.STEP_AT + 2
    # Dated after every commit: only the id can place it.
    release = Release("v1.1", synthetic.commit_id(measured), "2027-01-01T00:00:00+00:00")
    (step,) = trends.trends(runs, release, select=lambda name: name == f"{synthetic.STEP_CONFIG} solver")
    assert step.since == measured and step.standing == ()
    assert find_release(None, Path("/")) is None  # no git checkout: no release


def test_an_unknown_since_is_one_sentence(recorded, capsys, released):
    assert error(capsys, "show", "--history-dir", str(recorded), "--since", "v9") == (
        f"zvperf history: error: --since v9: not a tag or commit of the git repository at {released}."
    )


def test_k_selects_benchmarks_as_pytest_does(recorded, capsys, outside_git):
    assert set(show(capsys, recorded, "-k", "distill and solver and not 2step")) == {
        f"{synthetic.STEP_CONFIG} solver",
        "regressions",
    }
    assert set(show(capsys, recorded, "-k", "test_e2e")) == {f"{c} e2e" for c in synthetic.CONFIGS} | {"regressions"}
    message = error(capsys, "show", "--history-dir", str(recorded), "-k", "distill and")
    assert message.startswith("zvperf history: error: -k 'distill and' is not a pytest -k expression (")


def test_a_short_history_has_no_drift_to_tell(tmp_path, capsys, outside_git):
    paths = synthetic.write_runs(tmp_path / "results", range(3))
    assert main(["history", "add", *map(str, paths), "--history-dir", str(tmp_path / "h")]) == 0
    capsys.readouterr()
    sections = show(capsys, tmp_path / "h")
    step = sections[f"{synthetic.STEP_CONFIG} solver"]
    assert "over 3 commits" in step[0] and "  drift: too few commits to tell (needs 8)" in step


def test_show_without_a_history_says_how_to_start(tmp_path, capsys):
    assert error(capsys, "show", "--history-dir", str(tmp_path)) == (
        f"zvperf history: error: {tmp_path} holds no history; record runs with `zvperf history add RESULTS.json`."
    )


# --- the store ------------------------------------------------------------------------------------------------


def test_add_records_each_configurations_summary_in_one_line(tmp_path, capsys):
    k = synthetic.DOUBTFUL[0]
    path = synthetic.write_run(tmp_path, k)
    assert main(["history", "add", str(path), "--history-dir", str(tmp_path / "h")]) == 0
    history = tmp_path / "h" / f"{synthetic.KEY}.jsonl"
    assert capsys.readouterr().out.strip() == (
        f"history {history}: 7 benchmarks of commit {synthetic.commit_id(k)[:12]} (2026-01-06T15:00:00) added"
    )
    text = history.read_text(encoding="utf-8")
    (line,) = text.splitlines()
    run = json.loads(line)
    assert line == json.dumps(run, sort_keys=True, separators=(",", ":"))  # one compact line, sorted keys
    assert run["format"] == 1 and run["hardware_key"] == synthetic.KEY
    assert run["commit"] == synthetic.commit_id(k) and run["commit_time"] == synthetic.commit_time(k)
    assert run["date"].startswith("2026-01-06T15:00")
    assert run["versions"] == {
        "torch": "2.11.0",
        "cuda": None,
        "driver": None,
        "tensorrt": None,
        "onnxruntime": None,
        "zipvoice": None,
    }
    assert run["machine"] == {"cpu": "Test CPU", "cpu_cores": 2, "gpu": None}
    flat = run["configs"][synthetic.FLAT_CONFIG]
    assert {key: flat[key] for key in ("model", "steps", "backend", "precision", "weights")} == {
        "model": "zipvoice_distill",
        "steps": 2,
        "backend": "torch",
        "precision": "fp32",
        "weights": "official",
    }
    document = load_results(path)
    (solver,) = [r for r in document.results if r.id == f"{synthetic.FLAT_CONFIG} solver"]
    stored = flat["solver"]
    assert stored["median_ms"] == pytest.approx(solver.median * 1e3, rel=1e-5)
    assert stored["iqr_ms"] == pytest.approx(solver.iqr * 1e3, rel=1e-3)
    assert stored["data_ms"] == pytest.approx(sorted(x * 1e3 for x in solver.data), rel=1e-3)
    assert "rounds" not in stored  # all 10 rounds are stored
    assert stored["rtf"] == pytest.approx(solver.facts.rtf, rel=1e-3)
    assert stored["peak_mib"] == 900 and stored["j_per_audio_s"] == 4.0
    assert stored["flags"] == ["noisy", "throttled"] and "flags" not in flat["e2e"]
    assert "steps" not in run["configs"]["zipvoice_distill-torch-fp32"]  # the vocoder's has no step count
    # Read back, it writes the same line.
    (again,) = store.read(history)
    assert again.to_line() == text


def test_rounds_are_bounded_and_a_year_of_the_guide_matrix_stays_a_few_mb(tmp_path):
    many = synthetic.results_document(0)
    many["benchmarks"][0]["stats"].update(data=spread_rounds(0.2, n=80), rounds=80)
    path = tmp_path / "many.json"
    path.write_text(json.dumps(many))
    measurement = next(store.Run.from_results(load_results(path)).benchmarks())[2].to_json()
    assert measurement["rounds"] == 80 and len(measurement["data_ms"]) == store.MAX_STORED_ROUNDS
    assert min(measurement["data_ms"]) == pytest.approx(196) and max(measurement["data_ms"]) == pytest.approx(204)
    # One nightly run of the guide matrix: solver and end to end per combination, three component benchmarks per
    # built configuration, with noisy 4-digit times, telemetry and some flags.
    guide = PRESETS["guide"]
    noise = random.Random(0)
    benchmarks = []
    for model, steps in guide.steps.items():
        for backend, precision in guide.variants or ():
            facts = {"model": model, "backend": backend, "precision": precision, "rtf": 0.01234, "flags": []}
            facts["telemetry"] = {"gpu": {"joules_per_audio_second": 5.4321}, "torch_peak_allocated_mib": 1234.5}
            rows = [(f"{model}-{n}step-{backend}-{precision}", kind, n) for n in steps for kind in ("solver", "e2e")]
            rows += [
                (f"{model}-{backend}-{precision}", kind, None) for kind in ("text_encoder", "vocoder", "cold_start")
            ]
            for config_id, kind, n in rows:
                count = guide.cold_rounds if kind == "cold_start" else guide.rounds
                data = [noise.uniform(0.01, 0.09) for _ in range(count)]
                if noise.random() < 0.2:
                    facts["flags"] = ["noisy: IQR is 12% of the median (limit 10%)"]
                benchmarks.append(bench(config_id, data, kind=kind, num_step=n, **facts))
    guide_run = synthetic.results_document(0)
    guide_run["benchmarks"] = benchmarks
    path.write_text(json.dumps(guide_run))
    run = store.Run.from_results(load_results(path))
    per_variant = sum(2 * len(steps) + 3 for steps in guide.steps.values())
    assert run.size == per_variant * len(guide.variants or ()) == 90
    assert len(run.to_line().encode()) * 365 < 9_000_000, len(run.to_line().encode()) * 365


def test_appends_from_two_processes_at_once_lose_nothing(tmp_path):
    run_at_once(synthetic.append_many, [(tmp_path, range(0, 15)), (tmp_path, range(15, 30))])
    runs = store.read(tmp_path / "history" / f"{synthetic.KEY}.jsonl")
    assert sorted(run.commit for run in runs) == sorted(synthetic.commit_id(k) for k in range(30))
    assert not list((tmp_path / "history").glob(".*.tmp"))  # no temporary file left behind


def test_a_run_already_recorded_is_not_added_twice(tmp_path, capsys):
    path = synthetic.write_run(tmp_path, 0)
    history = tmp_path / "h" / f"{synthetic.KEY}.jsonl"
    assert main(["history", "add", str(path), "--history-dir", str(tmp_path / "h")]) == 0
    before = history.read_bytes()
    capsys.readouterr()
    assert main(["history", "add", str(path), "--history-dir", str(tmp_path / "h")]) == 0
    assert "is already recorded; not added again" in capsys.readouterr().out
    assert history.read_bytes() == before


def test_benchmarks_with_an_injected_slowdown_are_not_recorded(tmp_path, capsys):
    document = synthetic.results_document(0)
    for entry in document["benchmarks"][1:]:
        entry["extra_info"]["injected_slowdown"] = 0.25
    path = tmp_path / "r.json"
    path.write_text(json.dumps(document))
    assert main(["history", "add", str(path), "--history-dir", str(tmp_path / "h")]) == 0
    (run,) = store.read(tmp_path / "h" / f"{synthetic.KEY}.jsonl")
    assert [name for name, _, _ in run.benchmarks()] == [f"{synthetic.STEP_CONFIG} solver"]
    document["benchmarks"][0]["extra_info"]["injected_slowdown"] = 0.25
    path.write_text(json.dumps(document))
    assert error(capsys, "add", str(path), "--history-dir", str(tmp_path / "h")) == (
        f"zvperf history: error: {path}: every benchmark has an injected slowdown; there is nothing to add."
    )


def _line(tmp_path: Path) -> str:
    path = synthetic.write_run(tmp_path, 0)
    return store.Run.from_results(load_results(path)).to_line()


@pytest.mark.parametrize(
    ("second_line", "message"),
    [
        (lambda good: "{not json\n", "line 2 is not valid JSON (Expecting property name enclosed in double quotes)"),
        (lambda good: good.replace('"format":1', '"format":2'), "line 2 has format 2, newer than this zvperf reads"),
        (lambda good: good.replace('"format":1,', ""), "line 2 has no known format number (None)"),
        (
            lambda good: good.replace('"median_ms"', '"mean_ms"', 1),
            "line 2 configuration 'zipvoice-16step-torch-fp32' e2e is not a measurement (a JSON object with "
            "'median_ms'); fix it or restore it from git; it was not changed.",
        ),
    ],
    ids=["json", "newer", "no-format", "no-median"],
)
def test_a_broken_history_file_is_named_and_left_unchanged(tmp_path, capsys, second_line, message):
    good = _line(tmp_path)
    history = tmp_path / "h" / f"{synthetic.KEY}.jsonl"
    history.parent.mkdir()
    history.write_text(good + second_line(good), encoding="utf-8")
    before = history.read_bytes()
    path = synthetic.write_run(tmp_path, 1)
    for args in (["add", str(path)], ["show"]):
        line = error(capsys, *args, "--history-dir", str(tmp_path / "h"))
        assert line.startswith(f"zvperf history: error: history file {history} {message}"), line
    assert history.read_bytes() == before


def test_results_without_a_hardware_key_are_refused(tmp_path, capsys):
    document = synthetic.results_document(0)
    del document["machine_info"]["zvperf"]["hardware_key"]
    path = tmp_path / "r.json"
    path.write_text(json.dumps(document))
    assert error(capsys, "add", str(path), "--history-dir", str(tmp_path / "h")) == (
        f"zvperf history: error: {path}: machine_info.zvperf has no hardware_key to file the history under."
    )
    assert not (tmp_path / "h").exists()


def test_a_change_of_level_names_the_software_that_changed_with_it(tmp_path, capsys, outside_git):
    paths = []
    for k in range(30):
        path = tmp_path / f"run{k}.json"
        torch = "2.12.0" if k >= synthetic.STEP_AT else "2.11.0"
        path.write_text(json.dumps(synthetic.results_document(k, torch=torch)))
        paths.append(str(path))
    assert main(["history", "add", *paths, "--history-dir", str(tmp_path / "h")]) == 0
    capsys.readouterr()
    step = show(capsys, tmp_path / "h", "-k", f"{synthetic.STEP_CONFIG} and solver")[f"{synthetic.STEP_CONFIG} solver"]
    (change,) = [line for line in step if "level changed" in line]
    assert change.endswith("slower); also changed: torch 2.11.0 -> 2.12.0"), change
