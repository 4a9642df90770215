"""The CI set-up: workflow files, tox environments and .ci/run agree with each other and with the README."""

from __future__ import annotations

import configparser
import re
import shlex
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
    return [line.strip() for step in job["steps"] if "run" in step for line in step["run"].splitlines() if line.strip()]


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
        words = shlex.split(re.sub(r"\$\{\{[^}]*\}\}", "X", line.split("|")[0]))
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


def test_gpu_gate_workflow_benchmarks_gates_and_reports_per_runner():
    gate = workflow("gpu-gate.yml")
    assert "pull_request" in gate["on"]
    job = gate["jobs"]["benchmark"]
    labels = job["strategy"]["matrix"]["runner"][0]["labels"]
    assert "self-hosted" in labels and "gpu" in labels
    commands = zvperf_commands(run_lines(job))
    assert [c[0] for c in commands] == ["bench", "compare", "report"]
    assert commands[0][:3] == ["bench", "--gpus", "all"] and "--zv-matrix" in commands[0]
    uploads = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert uploads and "results-${{ matrix.runner.name }}.json" in uploads[0]["with"]["path"]
    summary = "\n".join(run_lines(job))
    assert "GITHUB_STEP_SUMMARY" in summary
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
    assert not any(line.startswith("git push") for line in lines)
    assert any(str(step.get("uses", "")).startswith("peter-evans/create-pull-request") for step in job["steps"])


@pytest.mark.parametrize("name", ["ci.yml", "gpu-gate.yml", "baseline-update.yml"])
def test_every_zvperf_command_in_the_workflows_parses(name):
    data = workflow(name)
    for job in data["jobs"].values():
        for args in zvperf_commands(run_lines(job)):
            build_parser(args).parse_args(args)  # exits (SystemExit) on an unknown command or option


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
    assert "mypy zvperf" in tox["testenv:type"]["commands"]
    assert "ruff check zvperf tests" in tox["testenv:lint"]["commands"]
    for line in tox["testenv:report"]["commands"].strip().splitlines():
        args = shlex.split(line.replace("{posargs:", "").replace("}", "").replace("{tox_root", "").replace("{/", "/"))
        build_parser(args[1:]).parse_args(args[1:])


def test_the_gpu_check_runs_from_tox_and_the_readme_says_how():
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    env = tox["testenv:gpu-check"]
    assert env["extras"].strip() == ""  # never the onnx extra's onnxruntime beside onnxruntime-gpu
    assert '"{tox_root}[gpu]"' in env["commands_pre"]
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
