"""Appending runs to the history: locked like the baselines, and atomic.

An append holds ``<file>.lock``, re-reads the file under it (a file that does not parse is an error, never
overwritten), and replaces it with its old bytes followed by the new lines (a temporary file, then one rename): two
processes appending at once both land, and a reader or a crash sees the old file or the new one, never half a
line. Rewriting the file rather than appending in place costs one copy of a few MB per run, and buys exactly that.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from zvperf.errors import ZvperfError
from zvperf.files import locked, read_text, write_atomic
from zvperf.history.store import Run, history_path, parse
from zvperf.results.schema import ResultsFile


@dataclasses.dataclass
class AppendSummary:
    path: Path
    added: list[Run]
    already: list[Run]  # the same commit and date were recorded before: not added twice

    def lines(self) -> list[str]:
        lines = [
            f"history {self.path}: {run.size} benchmarks of commit {run.commit[:12]} ({run.date[:19]}) added"
            for run in self.added
        ]
        lines += [
            f"history {self.path}: commit {run.commit[:12]} ({run.date[:19]}) is already recorded; not added again"
            for run in self.already
        ]
        return lines


def append(directory: Path, *runs: ResultsFile) -> list[AppendSummary]:
    """Append each results file's run to the history file of its hardware key (only those files are touched)."""
    by_key: dict[str, list[Run]] = {}
    for results in runs:
        if "hardware_key" not in results.zvperf_machine:
            raise ZvperfError(f"{results.path}: machine_info.zvperf has no hardware_key to file the history under.")
        run = Run.from_results(results)
        if not run.size:
            raise ZvperfError(f"{results.path}: every benchmark has an injected slowdown; there is nothing to add.")
        by_key.setdefault(run.hardware_key, []).append(run)
    return [_append(history_path(directory, key), key_runs) for key, key_runs in by_key.items()]


def _append(path: Path, runs: list[Run]) -> AppendSummary:
    summary = AppendSummary(path, [], [])
    with locked(path):
        old = read_text(path, f"history file {path}") if path.exists() else ""
        seen = {run.identity for run in parse(old, path)}
        for run in runs:
            if run.identity in seen:
                summary.already.append(run)
            else:
                seen.add(run.identity)
                summary.added.append(run)
        if summary.added:
            separator = "" if not old or old.endswith("\n") else "\n"
            write_atomic(path, old + separator + "".join(run.to_line() for run in summary.added))
    return summary
