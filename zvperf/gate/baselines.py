"""Baselines: one human-readable JSON file per hardware key in ``baselines/``, safe to update concurrently.

A file is ``{"format": 6, "hardware_key": ..., "machine": {...}, "benchmarks": {id: entry}}`` with sorted keys and
two-space indentation, so a baseline change reads as a small diff. Each entry keeps the median, IQR,
round count and (at most ``MAX_STORED_ROUNDS``) raw round times, the median of each run it pooled
(``process_medians``: what the gate's test compares, ``zvperf.gate.stats``) and the spread of each run's own rounds
(``process_spreads``: what the gate's spread limit reads) and, for a gated CPU row, the median time of the fixed
workload each run timed beside its rounds (``process_references``: the host's speed then), the software
versions, weights, commit and date of the run, the figures measured once per run (``per_run``: peak memory
and energy per audio second, a value for each pooled run that measured it; ``zvperf.gate.metrics``), and the
entry it replaced (``previous``, one level deep) so that ``zvperf baseline revert`` can undo a bad update. An
entry pools the rounds of several runs (separate processes) of one commit: on a machine whose speed drifts
from one process to the next, a baseline from one process can sit at either end of that drift and make every
later run look slower or faster; its processes' medians give the gate that drift to test against.

Updates hold a lock on ``<file>.lock``, re-read the file under it, and replace it atomically (a
temporary file in the same folder, then ``os.replace``): two concurrent updates both land, and a
crash never leaves half a file. A file that does not parse is an error naming it; it is never
overwritten.

Baseline format history (``format``; a file without it is format 1):

1. before formats were recorded: the same fields, no number.
2. the number.
3. ``per_run`` in each entry. Entries of formats 1 and 2 are read with none, and the gate says that the
   baseline has no figure until the next update; the number changed because a zvperf that reads format 2
   would rewrite the entries it does not replace without their figures.
4. ``process_medians`` in each entry. Older entries pooled from one run read with that run's median (the
   entry's); those pooled from several read with none, and the gate cannot judge against them until the next
   update (the number changed for the reason 3 did).
5. ``process_spreads`` in each entry: each pooled run's IQR over its median. Older entries read with none, and
   the spread limit reads their pooled rounds' IQR, which holds the drift between processes too (stricter).
6. ``process_references`` and ``reference_workload``: the median time of the fixed workload each pooled run timed
   beside the rounds (a gated row on a CPU: ``zvperf.suite.timing.HostReference``), and what it was. Older
   entries read with none, and the gate judges them without taking the host's speed out.

A file of a newer format is refused with one sentence and left as it is.

Given the gate's settings, an update whose entries the gate could never judge is refused, and nothing is written:
an entry pooled from fewer runs than the exact test on process medians needs to reach alpha against the gate
matrix's three judged processes (seven at alpha 0.01: ``zvperf.gate.stats.processes_needed``).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_benchmark.stats import Stats

from zvperf.errors import ZvperfError
from zvperf.files import locked, write_atomic
from zvperf.gate import metrics
from zvperf.gate.config import GateConfig
from zvperf.gate.stats import JUDGED_PROCESSES, MIN_SIDE, processes_needed
from zvperf.results.schema import Result, ResultsFile
from zvperf.results.stores import SOFTWARE_KEYS as SOFTWARE_KEYS  # re-exported: the gate names them from here
from zvperf.results.stores import key_path, keys_in, machine_summary, order_statistics, run_versions

BASELINE_FORMAT = 6
DEFAULT_DIR = Path("baselines")  # relative to the current directory: run from the repository root
MAX_STORED_ROUNDS = 50


def _bounded(data: list[float]) -> list[float]:
    """At most MAX_STORED_ROUNDS round times, to the nanosecond."""
    return [round(v, 9) for v in order_statistics(data, MAX_STORED_ROUNDS)]


def _numbers(value: dict[str, Any], key: str, what: str) -> list[float]:
    """An entry's list of numbers (empty where its format has none); ValueError when it is not one."""
    numbers = value.get(key) or []
    if not isinstance(numbers, list) or not all(isinstance(x, int | float) for x in numbers):
        raise ValueError(f"{key!r} is not a list of {what}")
    return [float(x) for x in numbers]


@dataclasses.dataclass
class Entry:
    """One benchmark's baseline."""

    median: float
    iqr: float
    rounds: int
    data: list[float]  # raw round times in seconds, sorted, at most MAX_STORED_ROUNDS
    versions: dict[str, str | None]
    weights: str
    commit: str
    date: str
    flags: list[str] = dataclasses.field(default_factory=list)  # the runs' sanity flags (noisy, throttled)
    runs: int = 1  # how many runs (processes) the rounds were pooled from
    per_run: dict[str, list[float]] = dataclasses.field(default_factory=dict)  # metric key -> one figure per run
    process_medians: list[float] = dataclasses.field(default_factory=list)  # one per pooled run (format 4)
    process_spreads: list[float] = dataclasses.field(default_factory=list)  # IQR / median per pooled run (format 5)
    # The host reference's median seconds per pooled run, and its workload (format 6; none where a run had none).
    process_references: list[float] = dataclasses.field(default_factory=list)
    reference_workload: str = ""
    previous: Entry | None = None

    @property
    def spread(self) -> float:
        """IQR / median of the pooled rounds: the drift between processes included."""
        return self.iqr / self.median if self.median else float("inf")

    @property
    def round_noise(self) -> float:
        """How far a process's rounds spread: the median of the pooled runs' own IQR over median (the pooled
        rounds' for an entry stored before zvperf kept them)."""
        return statistics.median(self.process_spreads) if self.process_spreads else self.spread

    @property
    def processes(self) -> list[float] | None:
        """The median of each pooled run; None where an entry of an older format pooled several and kept none."""
        if self.process_medians:
            return self.process_medians
        return [self.median] if self.runs == 1 else None

    @property
    def throttled(self) -> bool:
        return any(f.startswith("throttled") for f in self.flags)

    @classmethod
    def pooled(cls, measured: list[tuple[Result, ResultsFile]]) -> Entry:
        """One entry from the same benchmark's result in one or more runs of one commit and software."""
        result, results = measured[0]
        references = [each.host_reference for each, _ in measured]
        workloads = {reference[0] for reference in references if reference is not None}
        kept = None not in references and len(workloads) == 1  # a reference is only comparable to its own workload
        # pytest-benchmark's own statistics over the pooled rounds (for one run, the numbers in its JSON).
        stats = Stats()
        for each, _ in measured:
            for duration in each.data:
                stats.update(duration)
        return cls(
            median=round(stats.median, 9),
            iqr=round(stats.iqr, 9),
            rounds=stats.rounds,
            data=_bounded(stats.data),
            versions=run_versions(results),
            weights=result.facts.weights,
            commit=results.commit,
            date=max(run.datetime for _, run in measured),
            flags=sorted({flag for each, _ in measured for flag in each.flags}),
            runs=len(measured),
            per_run=metrics.per_run([each for each, _ in measured]),
            process_medians=[round(each.median, 9) for each, _ in measured],
            process_spreads=[round(each.spread, 6) for each, _ in measured],
            process_references=[round(r[1], 9) for r in references if r is not None] if kept else [],
            reference_workload=workloads.pop() if kept else "",
        )

    def to_json(self) -> dict[str, Any]:
        value = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "previous"}
        if self.previous is not None:
            value["previous"] = self.previous.to_json()
        return value

    @classmethod
    def from_json(cls, value: Any) -> Entry:
        """Raises ValueError saying what is wrong (the caller names the file and the entry)."""
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
        missing = [k for k in ("median", "iqr", "rounds", "data") if k not in value]
        if missing:
            raise ValueError(f"no {missing[0]!r}")
        data = value["data"]
        if not isinstance(data, list) or not all(isinstance(x, int | float) for x in data):
            raise ValueError("'data' is not a list of round times")
        numbers = {k: value[k] for k in ("median", "iqr", "rounds")}
        for key, number in numbers.items():
            if not isinstance(number, int | float) or isinstance(number, bool) or number < 0:
                raise ValueError(f"{key!r} is not a non-negative number")
        previous = value.get("previous")
        references, medians = (
            _numbers(value, "process_references", "seconds"),
            _numbers(value, "process_medians", "medians"),
        )
        if references and len(references) != len(medians):
            raise ValueError(f"'process_references' has {len(references)} values for {len(medians)} process medians")
        return cls(
            median=float(value["median"]),
            iqr=float(value["iqr"]),
            rounds=int(value["rounds"]),
            data=[float(x) for x in data],
            versions=dict(value.get("versions") or {}),
            weights=str(value.get("weights", "unknown")),
            commit=str(value.get("commit", "unknown")),
            date=str(value.get("date", "")),
            flags=list(value.get("flags") or []),
            runs=int(value.get("runs", 1)),
            per_run=metrics.read_per_run(value.get("per_run", {})),  # formats 1 and 2: none
            process_medians=medians,  # formats 1 to 3: none
            process_spreads=_numbers(value, "process_spreads", "spreads"),  # formats 1 to 4: none
            process_references=references,  # formats 1 to 5: none
            reference_workload=str(value.get("reference_workload", "")),
            previous=cls.from_json(previous) if previous is not None else None,
        )


@dataclasses.dataclass
class BaselineFile:
    path: Path
    hardware_key: str
    machine: dict[str, Any]  # CPU model and cores, GPU name: what the key stands for
    entries: dict[str, Entry]

    def to_text(self) -> str:
        document = {
            "format": BASELINE_FORMAT,
            "hardware_key": self.hardware_key,
            "machine": self.machine,
            "benchmarks": {name: entry.to_json() for name, entry in self.entries.items()},
        }
        return json.dumps(document, indent=2, sort_keys=True) + "\n"


def baseline_path(directory: Path, hardware_key: str) -> Path:
    return key_path(directory, hardware_key, ".json")


def hardware_keys(directory: Path) -> list[str]:
    """The hardware keys that have a baseline file in ``directory``."""
    return keys_in(directory, ".json")


def read(path: Path) -> BaselineFile | None:
    """The baseline file at ``path``, None when there is none; a broken one is an error naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ZvperfError(f"baseline file {path} cannot be read ({exc}).") from None
    keep = "fix it or restore it from git; it was not changed"
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ZvperfError(f"baseline file {path} is not valid JSON ({exc}): {keep}.") from None
    if not isinstance(document, dict) or not isinstance(document.get("benchmarks"), dict):
        raise ZvperfError(f"baseline file {path} has no 'benchmarks' object: {keep}.")
    version = document.get("format", 1)
    if version not in range(1, BASELINE_FORMAT + 1):
        raise ZvperfError(
            f"baseline file {path} has format {version!r}, not one this zvperf reads (1 to {BASELINE_FORMAT}): "
            f"was it written by a newer version? It was not changed."
        )
    entries = {}
    for name, value in document["benchmarks"].items():
        try:
            entries[name] = Entry.from_json(value)
        except ValueError as exc:
            raise ZvperfError(f"baseline file {path}: entry {name!r} is malformed ({exc}): {keep}.") from None
    return BaselineFile(path, str(document.get("hardware_key", path.stem)), document.get("machine") or {}, entries)


@dataclasses.dataclass
class UpdateSummary:
    path: Path
    added: list[str]
    replaced: list[str]
    skipped: dict[str, str]  # id -> why it was not stored
    stored_flagged: dict[str, list[str]]  # stored, but flagged noisy/throttled: later comparisons will say so

    def lines(self) -> list[str]:
        lines = [
            f"baseline {self.path}: {len(self.added)} added, {len(self.replaced)} replaced "
            f"(previous values kept for `zvperf baseline revert`), {len(self.skipped)} skipped"
        ]
        lines += [f"  skipped {name}: {why}" for name, why in self.skipped.items()]
        lines += [
            f"  warning: {name} stored with flags ({'; '.join(flags)}): comparisons against it may be inconclusive"
            for name, flags in self.stored_flagged.items()
        ]
        return lines


def same_stack(runs: Sequence[ResultsFile], pooled_into: str) -> None:
    """Runs pooled into one side of a comparison (``pooled_into`` says which) must be one hardware key, commit,
    software stack and weights."""
    first = runs[0]

    def facts(run: ResultsFile) -> dict[str, Any]:
        weights = sorted({r.facts.weights for r in run.results})
        return {
            "hardware key": run.hardware_key,
            "commit": run.commit_info.get("id"),
            "software": run_versions(run),
            "weights": weights,
        }

    expected = facts(first)
    for run in runs[1:]:
        for what, value in facts(run).items():
            if value != expected[what]:
                raise ZvperfError(
                    f"{run.path} and {first.path} differ in {what} ({value} vs {expected[what]}): only runs of "
                    f"one hardware key, commit, software and weights pool into {pooled_into}."
                )


def _refuse_unjudgeable(path: Path, new: dict[str, Entry], config: GateConfig, hardware_key: str) -> None:
    """Raise when a gated run could not be judged against an entry: with the gate matrix's judged processes, too
    few pooled runs for the exact test on process medians ever to give p below the entry's alpha."""
    alphas = {name: config.rule(name, hardware_key).alpha for name in new}
    needed = {name: max(MIN_SIDE, processes_needed(JUDGED_PROCESSES, alphas[name])) for name in new}
    unjudgeable = [name for name, entry in new.items() if entry.runs < needed[name]]
    if unjudgeable:
        first = unjudgeable[0]
        runs, alpha = new[first].runs, alphas[first]
        raise ZvperfError(
            f"{path} was not updated: the gate could not judge {len(unjudgeable)} of {len(new)} benchmarks against "
            f"it, such as {first!r}, pooled from {'one run' if runs == 1 else f'{runs} runs'}: against the "
            f"{JUDGED_PROCESSES} processes a gated run judges, the exact test on process medians reaches alpha "
            f"{alpha:g} from {needed[first]} baseline runs; pool more (zvperf baseline update A.json B.json ...)."
        )


def update(directory: Path, *runs: ResultsFile, config: GateConfig | None = None) -> UpdateSummary:
    """Merge the results of one or more runs into the baseline file of their hardware key (only that file is
    touched). Several runs of the same benchmark pool their rounds into one entry. With the gate's ``config``, an
    update with entries the gate could not judge (too few runs pooled) is refused."""
    for run in runs:
        if "hardware_key" not in run.zvperf_machine:
            raise ZvperfError(f"{run.path}: machine_info.zvperf has no hardware_key to file the baseline under.")
    same_stack(runs, "one baseline; nothing was written")
    path = baseline_path(directory, runs[0].hardware_key)
    summary = UpdateSummary(path, [], [], {}, {})
    measured: dict[str, list[tuple[Result, ResultsFile]]] = {}
    for run in runs:
        for result in run.results:
            if result.facts.injected_slowdown:
                summary.skipped[result.id] = "measured with an injected slowdown (--zv-inject-slowdown)"
            elif not result.data:
                summary.skipped[result.id] = "no raw round times in the results"
            else:
                measured.setdefault(result.id, []).append((result, run))
    new = {name: Entry.pooled(pairs) for name, pairs in measured.items() if name not in summary.skipped}
    with locked(path):
        current = read(path) or BaselineFile(path, runs[0].hardware_key, {}, {})  # a broken file is said first
        if config is not None:
            _refuse_unjudgeable(path, new, config, current.hardware_key)
        current.machine = machine_summary(runs[0])
        for name, entry in new.items():
            old = current.entries.get(name)
            if old is not None:
                entry.previous = dataclasses.replace(old, previous=None)
            (summary.replaced if old else summary.added).append(name)
            if entry.flags:
                summary.stored_flagged[name] = entry.flags
            current.entries[name] = entry
        if new:
            write_atomic(current.path, current.to_text())
    return summary


def revert(directory: Path, hardware_key: str, benchmark_id: str) -> tuple[Entry, Entry]:
    """Put an entry's previous value back; the value it replaces becomes the previous, so a second revert undoes
    the first. Returns (restored, replaced)."""
    path = baseline_path(directory, hardware_key)
    if not path.exists():
        raise ZvperfError(f"there is no baseline file {path}.")
    with locked(path):
        current = read(path) or BaselineFile(path, hardware_key, {}, {})
        entry = current.entries.get(benchmark_id)
        if entry is None:
            raise ZvperfError(f"{path} has no entry {benchmark_id!r}.")
        if entry.previous is None:
            raise ZvperfError(f"{path}: {benchmark_id!r} has no previous value to revert to.")
        restored = dataclasses.replace(entry.previous, previous=dataclasses.replace(entry, previous=None))
        current.entries[benchmark_id] = restored
        write_atomic(current.path, current.to_text())
    return restored, entry
