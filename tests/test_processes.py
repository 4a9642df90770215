"""Child processes in groups of their own: when the block that started one ends, however it ends, every process
of the group is gone, grandchildren included; and the launcher and confirm, which run benchmark processes, use
this. Every wait here is for a condition (a file another process writes), never a fixed time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import running, spawning_code, wait_until
from zvperf import processes
from zvperf.errors import ZvperfError
from zvperf.suite import confirm, launcher

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads process states from /proc (Linux)")


def test_an_error_in_the_block_stops_the_child_and_its_grandchild(tmp_path: Path):
    pid_file = tmp_path / "grandchild.pid"
    with pytest.raises(KeyError), processes.group([sys.executable, "-c", spawning_code(pid_file)]) as child:
        grandchild = int(wait_until(pid_file.is_file, "the grandchild started") and pid_file.read_text())
        assert set(processes.group_members(child.pid)) == {child.pid, grandchild}
        raise KeyError("Ctrl-C, or any error of the caller")
    assert child.returncode == -9  # reaped, not left a zombie
    assert not running(grandchild) and processes.group_members(child.pid) == []


def test_a_child_that_exits_leaves_nothing_running_behind_it(tmp_path: Path):
    """A benchmark process whose worker outlives it (here a grandchild it does not wait for)."""
    pid_file = tmp_path / "grandchild.pid"
    with processes.group([sys.executable, "-c", spawning_code(pid_file, then="sys.exit(0)")]) as child:
        assert child.wait() == 0
    assert not running(int(pid_file.read_text()))


def test_zombies_are_not_members_and_an_empty_group_is_stopped_at_once(tmp_path: Path):
    child = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    wait_until(lambda: not running(child.pid), "the child exited (a zombie until it is reaped)")
    assert processes.group_members(child.pid) == []
    assert processes.stop_group(child) == [] and child.returncode == 0


def test_the_launcher_stops_the_shards_it_started_when_it_fails(tmp_path: Path, monkeypatch):
    """Shard 0 is running (with a grandchild) when starting shard 1 fails: run_shards raises, and shard 0's whole
    group is gone by then."""
    pid_file = tmp_path / "grandchild.pid"
    started: list[subprocess.Popen] = []

    class Recorded(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

    def command(*args: str) -> list[str]:
        if not started:
            return [sys.executable, "-c", spawning_code(pid_file)]
        wait_until(pid_file.is_file, "shard 0's grandchild started")
        return [str(tmp_path / "no-such-program")]

    monkeypatch.setattr(processes.subprocess, "Popen", Recorded)
    monkeypatch.setattr(launcher, "pytest_command", command)
    with pytest.raises(FileNotFoundError):
        launcher.run_shards(["0", "1"], [], tmp_path)
    (shard,) = started
    assert shard.returncode == -9 and processes.group_members(shard.pid) == []
    assert not running(int(pid_file.read_text()))


def test_a_confirm_process_leaves_nothing_running_and_its_failure_names_its_side(tmp_path: Path, monkeypatch):
    pid_file = tmp_path / "grandchild.pid"
    code = spawning_code(pid_file, then="print('the last line of its output'); sys.exit(3)")
    monkeypatch.setattr(confirm, "pytest_command", lambda *args, python: [python, "-c", code])
    with pytest.raises(ZvperfError) as error:
        side = confirm.Side("base", sys.executable, tmp_path, tmp_path, tmp_path / "cache")
        confirm._run(side, tmp_path / "base-1.json", [])
    assert str(error.value) == (
        "the base commit's benchmark process failed (pytest exit 3): the last line of its output"
    )
    assert not running(int(pid_file.read_text()))
