"""The release that standing regressions are counted from: a git tag or any commit the user names.

The history stores commit ids and dates, not tags; a release is looked up in the git repository the command runs
in: ``--since REF`` names one (a tag, branch or commit id), and without it the latest tag reachable from ``HEAD``
(``git describe --tags --abbrev=0``) is taken. Outside a git checkout, or in one without tags, there is no release
and regressions are counted from the start of the history. ``--since none`` asks for the start of the history
whatever the tags (a git ref cannot be named ``none``: the name is free).
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zvperf.errors import ZvperfError


@dataclasses.dataclass(frozen=True)
class Release:
    name: str  # the tag (or the ref as given)
    commit: str  # the full commit id it points to
    time: str  # the commit's committer date, ISO 8601


FROM_START = "none"  # --since none: no release, the whole history


def _git(repository: Path, *args: str) -> str:
    """git's output; raises OSError (no git) or CalledProcessError (git refused)."""
    completed = subprocess.run(
        ["git", "-C", str(repository), *args], capture_output=True, text=True, check=True, timeout=30
    )
    return completed.stdout.strip()


def _resolve(repository: Path, name: str) -> Release:
    commit = _git(repository, "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}")
    return Release(name, commit, _git(repository, "show", "-s", "--format=%cI", commit))


def find_release(ref: str | None, repository: Path) -> Release | None:
    """``ref`` resolved in the git repository at ``repository``; without one, the latest tag reachable from HEAD,
    or None when there is none (not a git checkout, no tags, no git); None for ``none`` (FROM_START). A ``ref`` git
    cannot resolve is an error."""
    if ref == FROM_START:
        return None
    if ref is None:
        try:
            return _resolve(repository, _git(repository, "describe", "--tags", "--abbrev=0"))
        except (OSError, subprocess.SubprocessError):
            return None
    try:
        return _resolve(repository, ref)
    except (OSError, subprocess.SubprocessError):
        raise ZvperfError(f"--since {ref}: not a tag or commit of the git repository at {repository}.") from None


def add_since_option(add: Callable[..., Any]) -> None:
    """``--since REF``, for ``zvperf history show`` and ``zvperf report --history``."""
    add(
        "--since",
        metavar="REF",
        help="count standing regressions from this git tag or commit (default: the latest tag reachable from HEAD, "
        f"or the start of the history where there is none); {FROM_START}: from the start of the history",
    )
