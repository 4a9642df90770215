"""Child processes that leave nothing behind: each command runs in a process group of its own (a session), and
stopping it kills the whole group and waits until every process of it is gone, however slowly a loaded machine
schedules them. What a step started (a compile worker, a TensorRT builder, a benchmark's own children) can then
neither outlive the step nor time the next one.

psutil would find a process tree, but a grandchild whose parent died is re-parented out of that tree, while it
stays in its process group; the group is read from ``/proc`` (Linux) or probed with ``killpg(pgid, 0)``
elsewhere, which is all this needs and keeps psutil out of the dependencies."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from zvperf.errors import ZvperfError

# Bounds a hang only: a killed process is gone as soon as the kernel next schedules it, which on a machine loaded
# several times over can take seconds, never minutes.
GONE_WAIT_S = 120.0
_POLL_S = 0.01
_PROC = Path("/proc")


def group_members(pgid: int) -> list[int]:
    """The living processes of process group ``pgid`` (zombies, which run nothing, are not counted: a killed
    orphan stays one until whoever adopted it reaps it). Where ``/proc`` is absent: the group leader's id while
    any process of the group exists, zombies included."""
    if not (_PROC / "self" / "stat").is_file():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:  # a member exists that this user cannot signal
            pass
        return [pgid]
    members = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited while we looked
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses, so split after its last ")".
        state, _ppid, group = stat.rsplit(")", 1)[1].split()[:3]
        if int(group) == pgid and state not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def stop_group(process: subprocess.Popen[Any], wait_s: float = GONE_WAIT_S) -> list[int]:
    """Kill every process of ``process``'s group (it must lead one: started with ``start_new_session``), reap
    ``process`` and wait until the group is gone. Returns the ids of those still alive after ``wait_s``."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:  # the group is already gone
        pass
    process.wait()
    deadline = time.monotonic() + wait_s
    while (alive := group_members(process.pid)) and time.monotonic() < deadline:
        time.sleep(_POLL_S)  # polling is what waiting for processes that are not our children takes
    return alive


def not_stopped(survivors: Sequence[int]) -> str:
    """The sentence for processes that outlived ``stop_group``'s wait ('' when there are none)."""
    if not survivors:
        return ""
    return f"process(es) {', '.join(map(str, survivors))} of its group still ran {GONE_WAIT_S:g} s after SIGKILL"


@contextmanager
def group(command: Sequence[str], **popen: Any) -> Iterator[subprocess.Popen[Any]]:
    """``subprocess.Popen(command, **popen)`` as the leader of a new process group; however the block ends (the
    command's exit, a limit, an exception or Ctrl-C in this process), the group is killed and waited for, so that
    nothing it started lives on. Survivors are an error: a process that SIGKILL cannot end is stuck in the kernel.
    Give the command files rather than pipes for its output: a pipe that a leftover process holds open never ends.
    """
    process = subprocess.Popen(list(command), start_new_session=True, **popen)
    try:
        yield process
    finally:
        survivors = stop_group(process)
        if survivors:
            raise ZvperfError(f"{command[0]}: {not_stopped(survivors)}.")
