"""The history's format and reading: every recorded run, one JSON Lines file per hardware key in ``history/``.

``history/<hardware key>.jsonl`` holds one line per run (one ``--benchmark-json`` file), in the order they were
added; a line is a JSON object with sorted keys and no spaces (shown here spread out)::

    {"commit": "5826d14...", "commit_time": "2026-11-25T16:26:18+00:00", "date": "2026-11-26T09:12:03+00:00",
     "format": 1, "hardware_key": "nvidia-h100-80gb-hbm3",
     "machine": {"cpu": "...", "cpu_cores": 16, "gpu": "NVIDIA H100 80GB HBM3"},
     "versions": {"cuda": "13.0", "driver": "580.95.05", "onnxruntime": "...", "tensorrt": "...", "torch": "..."},
     "configs": {"zipvoice_distill-4step-torch-fp32": {
         "model": "zipvoice_distill", "steps": 4, "backend": "torch", "precision": "fp32", "weights": "official",
         "solver": {"median_ms": 58.922, "iqr_ms": 4.769, "data_ms": [54.06, 58.37, ...], "rtf": 0.01649,
                    "peak_mib": 1200, "j_per_audio_s": 5.112, "flags": ["noisy"]},
         "e2e": {...}}, ...}}

``commit`` is the measured commit (``+dirty`` when the tree had changes), ``commit_time`` its committer date (what
orders the trend), ``date`` when the run was made, ``versions`` the software the gate also compares. A
configuration (the id the benchmarks are parametrized with) has its description (``steps`` absent for the text
encoder, vocoder and cold start; ``frames`` and ``batch`` only when set) and one object per kind of benchmark
measured: ``median_ms`` (6 significant digits) and ``iqr_ms`` (4), ``data_ms`` the raw round times (sorted, at
most ``MAX_STORED_ROUNDS`` evenly spaced order statistics, 4 significant digits), ``rounds`` when more rounds were
timed than stored, and when the run had them ``rtf``, ``peak_mib`` (peak memory as the report's telemetry table
has it), ``j_per_audio_s`` (GPU energy per second of audio) and ``flags`` (the sanity flags' codes). A benchmark's
id is ``<configuration> <kind>``, as the gate and the baselines name it.

Why this shape: a line per run makes the file append-only, so a new run is a one-line diff; the run's commit,
date and versions are written once per line and a configuration's description once per configuration; rounded
numbers and bounded rounds keep a year of nightly runs of the guide matrix (72 benchmarks, 10 rounds each) near
6 MB (``tests/test_history.py`` measures it). The file is read whole.

History format history (``format`` on every line):

1. this layout.

A line of a newer format is refused with one sentence naming the file and line; the file is left as it is.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from zvperf.errors import ZvperfError
from zvperf.files import read_text
from zvperf.results.schema import Result, ResultsFile
from zvperf.results.stores import key_path, keys_in, machine_summary, order_statistics, run_versions

HISTORY_FORMAT = 1
DEFAULT_DIR = Path("history")  # relative to the current directory: run from the repository root
SUFFIX = ".jsonl"
MAX_STORED_ROUNDS = 10  # the guide matrix's round count: a guide run is kept whole
# The flags that make a run's number less trustworthy: such points are drawn hollow.
DOUBTFUL_FLAGS = frozenset({"noisy", "throttled"})


def _significant(value: float, digits: int) -> float:
    return float(f"{value:.{digits}g}")


def _optional(value: Any, digits: int) -> float | None:
    return None if value is None else _significant(float(value), digits)


def _number(value: Any, what: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{what} is not a non-negative number ({value!r})")
    return float(value)


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One benchmark's numbers in one run (times in seconds here, in milliseconds in the file)."""

    median: float
    iqr: float
    rounds: int  # how many rounds were timed
    data: tuple[float, ...]  # sorted round times, at most MAX_STORED_ROUNDS
    rtf: float | None = None
    peak_memory_mib: float | None = None
    joules_per_audio_second: float | None = None
    flags: tuple[str, ...] = ()  # sanity flag codes

    @property
    def doubtful(self) -> bool:
        """Flagged noisy or throttled: the number is drawn hollow and read with care."""
        return bool(DOUBTFUL_FLAGS.intersection(self.flags))

    @classmethod
    def from_result(cls, result: Result) -> Measurement:
        facts = result.facts
        return cls(
            median=_significant(result.median, 6),
            iqr=_significant(result.iqr, 4),
            rounds=int(result.stats.get("rounds") or len(result.data)),
            data=tuple(_significant(v, 4) for v in order_statistics(result.data, MAX_STORED_ROUNDS)),
            rtf=_optional(facts.rtf, 4),
            peak_memory_mib=None if facts.peak_memory_mib is None else float(round(facts.peak_memory_mib)),
            joules_per_audio_second=_optional(facts.joules_per_audio_second, 4),
            flags=tuple(sorted({flag.partition(":")[0] for flag in facts.flags})),
        )

    def to_json(self) -> dict[str, Any]:
        value: dict[str, Any] = {
            "median_ms": _significant(self.median * 1e3, 6),
            "iqr_ms": _significant(self.iqr * 1e3, 4),
            "data_ms": [_significant(v * 1e3, 4) for v in self.data],
        }
        optional = {
            "rounds": self.rounds if self.rounds != len(self.data) else None,
            "rtf": self.rtf,
            "peak_mib": None if self.peak_memory_mib is None else round(self.peak_memory_mib),
            "j_per_audio_s": self.joules_per_audio_second,
            "flags": list(self.flags) or None,
        }
        value.update({key: item for key, item in optional.items() if item is not None})
        return value

    @classmethod
    def from_json(cls, value: Any, where: str) -> Measurement:
        """Raises ValueError starting with ``where`` (the benchmark) saying what is wrong (the caller names the file
        and line)."""
        if not isinstance(value, dict) or "median_ms" not in value:
            raise ValueError(f"{where} is not a measurement (a JSON object with 'median_ms')")
        data = value.get("data_ms") or []
        if not isinstance(data, list):
            raise ValueError(f"{where} has a 'data_ms' that is not a list of round times")
        return cls(
            median=_number(value["median_ms"], f"{where} median_ms") / 1e3,
            iqr=_number(value.get("iqr_ms", 0), f"{where} iqr_ms") / 1e3,
            rounds=int(value.get("rounds") or len(data)),
            data=tuple(_number(x, f"{where} round time") / 1e3 for x in data),
            rtf=value.get("rtf"),
            peak_memory_mib=value.get("peak_mib"),
            joules_per_audio_second=value.get("j_per_audio_s"),
            flags=tuple(value.get("flags") or ()),
        )


# The keys of a configuration's object that describe it; its other keys are kinds of benchmark.
_DESCRIPTION = ("model", "steps", "backend", "precision", "weights", "frames", "batch")


@dataclasses.dataclass(frozen=True)
class Configuration:
    """A timed configuration in one run (``zipvoice_distill-4step-torch-fp32``), with each kind's measurement."""

    model: str
    num_step: int | None  # None for the component benchmarks' configurations (text encoder, vocoder, cold start)
    backend: str
    precision: str
    weights: str  # "official", "local" or "synthetic"
    measurements: Mapping[str, Measurement]  # kind (solver, e2e, ...) -> its numbers
    frames_bucket: int | None = None
    batch: int = 1

    @property
    def variant(self) -> str:
        """What tells this configuration from the model's others: steps, backend-precision, length, batch."""
        parts = [f"{self.num_step}step"] if self.num_step is not None else []
        parts.append(f"{self.backend}-{self.precision}")
        if self.frames_bucket:
            parts.append(f"{self.frames_bucket}f")
        if self.batch > 1:
            parts.append(f"b{self.batch}")
        return " ".join(parts)

    def to_json(self) -> dict[str, Any]:
        description = {
            "model": self.model,
            "steps": self.num_step,
            "backend": self.backend,
            "precision": self.precision,
            "weights": self.weights,
            "frames": self.frames_bucket,
            "batch": self.batch if self.batch > 1 else None,
        }
        value: dict[str, Any] = {key: item for key, item in description.items() if item is not None}
        value.update({kind: measurement.to_json() for kind, measurement in self.measurements.items()})
        return value

    @classmethod
    def from_json(cls, value: Any, config_id: str) -> Configuration:
        """Raises ValueError naming the configuration and saying what is wrong (the caller names the file and
        line)."""
        where = f"configuration {config_id!r}"
        if not isinstance(value, dict):
            raise ValueError(f"{where} is not a JSON object")
        missing = [key for key in ("model", "backend", "precision") if key not in value]
        if missing:
            raise ValueError(f"{where} has no {missing[0]!r}")
        measurements = {
            kind: Measurement.from_json(measurement, f"{where} {kind}")
            for kind, measurement in value.items()
            if kind not in _DESCRIPTION
        }
        return cls(
            model=str(value["model"]),
            num_step=value.get("steps"),
            backend=str(value["backend"]),
            precision=str(value["precision"]),
            weights=str(value.get("weights", "unknown")),
            measurements=measurements,
            frames_bucket=value.get("frames"),
            batch=int(value.get("batch") or 1),
        )


@dataclasses.dataclass(frozen=True)
class Run:
    """One recorded run: a line of the history file."""

    hardware_key: str
    commit: str
    commit_time: str | None  # the committer date (ISO 8601), None when the run did not know it
    date: str  # when the run was made (ISO 8601)
    versions: Mapping[str, str | None]
    machine: Mapping[str, Any]
    configurations: Mapping[str, Configuration]  # configuration id -> its measurements

    @property
    def time(self) -> str:
        """What orders the trend: the commit's date, else the run's."""
        return self.commit_time or self.date

    @property
    def identity(self) -> tuple[str, str]:
        """A run is recorded once: the same commit measured at the same moment is the same run."""
        return self.commit, self.date

    @property
    def size(self) -> int:
        """How many benchmarks the run recorded."""
        return sum(len(c.measurements) for c in self.configurations.values())

    def benchmarks(self) -> Iterator[tuple[str, Configuration, Measurement]]:
        """Each benchmark of the run: its id (``<configuration id> <kind>``, as the gate names it), configuration
        and measurement."""
        for config_id, configuration in self.configurations.items():
            for kind, measurement in configuration.measurements.items():
                yield f"{config_id} {kind}", configuration, measurement

    @classmethod
    def from_results(cls, results: ResultsFile) -> Run:
        """The run's summary; benchmarks measured with an injected slowdown are left out (they are not the code's
        speed)."""
        configurations: dict[str, Configuration] = {}
        for result in results.results:
            if result.facts.injected_slowdown:
                continue
            facts = result.facts
            configuration = configurations.get(result.config_id) or Configuration(
                model=facts.model,
                num_step=facts.num_step,
                backend=facts.backend,
                precision=facts.precision,
                weights=facts.weights,
                measurements={},
                frames_bucket=facts.frames_bucket,
                batch=facts.batch_size,
            )
            measurements = {**configuration.measurements, result.kind: Measurement.from_result(result)}
            configurations[result.config_id] = dataclasses.replace(configuration, measurements=measurements)
        return cls(
            hardware_key=results.hardware_key,
            commit=results.commit,
            commit_time=results.commit_info.get("time"),
            date=results.datetime,
            versions=run_versions(results),
            machine=machine_summary(results),
            configurations=configurations,
        )

    def to_line(self) -> str:
        document = {
            "format": HISTORY_FORMAT,
            "hardware_key": self.hardware_key,
            "commit": self.commit,
            "commit_time": self.commit_time,
            "date": self.date,
            "versions": dict(self.versions),
            "machine": dict(self.machine),
            "configs": {config_id: c.to_json() for config_id, c in self.configurations.items()},
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, value: Any) -> Run:
        """Raises ValueError saying what is wrong (the caller names the file and line)."""
        if not isinstance(value, dict) or not isinstance(value.get("configs"), dict):
            raise ValueError("is not a run (a JSON object with a 'configs' object)")
        configs = value["configs"]
        return cls(
            hardware_key=str(value.get("hardware_key", "unknown")),
            commit=str(value.get("commit", "unknown")),
            commit_time=value.get("commit_time"),
            date=str(value.get("date", "")),
            versions=dict(value.get("versions") or {}),
            machine=dict(value.get("machine") or {}),
            configurations={config_id: Configuration.from_json(c, config_id) for config_id, c in configs.items()},
        )


def history_path(directory: Path, hardware_key: str) -> Path:
    return key_path(directory, hardware_key, SUFFIX)


def hardware_keys(directory: Path) -> list[str]:
    """The hardware keys that have a history file in ``directory``."""
    return keys_in(directory, SUFFIX)


def parse(text: str, path: Path) -> list[Run]:
    """The runs in a history file's text; a line that does not parse is an error naming the file and line."""
    keep = "fix it or restore it from git; it was not changed"
    runs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
            version = value.get("format") if isinstance(value, dict) else None
            if isinstance(version, int) and version > HISTORY_FORMAT:
                raise ZvperfError(
                    f"history file {path} line {number} has format {version}, newer than this zvperf reads "
                    f"(1 to {HISTORY_FORMAT}): upgrade zvperf; the file was not changed."
                )
            if version not in range(1, HISTORY_FORMAT + 1):
                raise ValueError(f"has no known format number ({version!r})")
            runs.append(Run.from_json(value))
        except json.JSONDecodeError as exc:
            raise ZvperfError(f"history file {path} line {number} is not valid JSON ({exc.msg}): {keep}.") from None
        except ValueError as exc:
            raise ZvperfError(f"history file {path} line {number} {exc}; {keep}.") from None
    return runs


def read(path: Path) -> list[Run]:
    """The runs recorded in ``path`` in the order they were added ([] when there is no file)."""
    if not path.exists():
        return []
    return parse(read_text(path, f"history file {path}"), path)
