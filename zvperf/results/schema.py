"""Benchmark results: one typed record of facts per benchmark, inside pytest-benchmark's JSON.

pytest-benchmark writes the file (``--benchmark-json``); each benchmark's ``extra_info`` holds the
fields of :class:`BenchmarkFacts`, ``machine_info.zvperf`` the machine, and the top-level ``zvperf``
section the run's settings and the format number. The live plugin and ``zvperf compare|report|baseline``
read results through this module alone, so the summary table, the sanity flags, the gate and the
report all see the same numbers.

Results format history (``zvperf.format``; a file without it is format 1):

1. the suite before formats were recorded: the same ``extra_info`` fields as format 2, no number.
2. the number, written through pytest-benchmark's ``pytest_benchmark_update_json`` hook.
3. ``zvperf.unmeasured``: every benchmark the run collected but did not time, with its outcome (skipped,
   failed, error, deselected) and the reason, so that the gate can say why a configuration is missing. A
   file may now hold no timed benchmark at all when it holds these (every benchmark skipped).
4. efficiency: solver results carry ``flops``, ``flop_rate`` and ``gemm_efficiency``, and
   ``machine_info.zvperf.gemm`` the attainable matrix-multiply rate per precision (older files: absent, None).
   Rows timed under a stopping rule (the gate matrix) add ``stopping``, an optional key older readers keep;
   on a CPU, ``host_reference`` too (the same).

A file of a format this version does not know is refused with one sentence; older ones are upgraded
on reading (``_UPGRADES``), so committed results keep loading.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from zvperf.errors import ZvperfError
from zvperf.files import read_json

RESULTS_FORMAT = 4
KINDS = ("solver", "e2e", "text_encoder", "vocoder", "cold_start")


@dataclasses.dataclass(frozen=True)
class BenchmarkFacts:
    """What one benchmark measured and on what: zvperf's ``extra_info``, field for key."""

    kind: str  # one of KINDS
    model: str
    num_step: int | None  # None for the stages that do not depend on it (text encoder, vocoder)
    backend: str
    precision: str
    device: str
    weights: str  # "official", "local" or "synthetic" (zvperf.engine.weights)
    frames: int  # decoder frames per evaluation (prompt + speech)
    audio_seconds: float  # speech produced by one call, all utterances of a batch together
    rtf: float | None  # median seconds per second of audio
    nfe: int  # decoder evaluations per call, a doubled (CFG) batch counting twice
    ms_per_nfe: float | None
    telemetry: Mapping[str, Any]  # zvperf.suite.telemetry's summary: cpu, gpu, torch peak memory
    frames_bucket: int | None = None  # the fixed length asked for (--zv-lengths), None for the text's own
    speedup_vs_zipvoice16: float | None = None  # set across the run by derived.add_speedups
    flags: tuple[str, ...] = ()  # sanity flags, "code: detail", set across the run by sanity.check
    # Written for the kinds that have them (KIND_KEYS), the last two only when set:
    batch: int | None = None  # utterances solved together (solver)
    guidance_scale: float | None = None  # solver
    # solver (and the ZipVoice checkout's rows of every kind): relative error against zvperf's torch fp32 (None: the
    # reference itself)
    verified_error: float | None = None
    flops: float | None = None  # solver: matrix-product FLOPs of one call (zvperf.engine.flops)
    flop_rate: float | None = None  # solver: flops / median seconds
    gemm_efficiency: float | None = None  # solver: flop_rate / the machine's attainable GEMM rate in this precision
    attainable_flop_rate: float | None = None  # solver: that attainable rate, as the process that timed it measured it
    peak_efficiency: float | None = None  # solver on CUDA: flop_rate / the chip's dense peak in this precision
    stages_ms: Mapping[str, float] | None = None  # e2e: median milliseconds per pipeline stage
    chunks: int | None = None  # e2e: text chunks synthesised
    # cold_start: import, load, first call (median seconds); warm_import, warm_load, warm_first_call where the
    # backend keeps its build (an export, an engine, compiled kernels) for the next process
    phases_s: Mapping[str, float] | None = None
    injected_slowdown: float | None = None  # --zv-inject-slowdown, when one was injected
    shard: Mapping[str, Any] | None = None  # zvperf bench: which shard and GPU measured it
    # The ZipVoice checkout's rows: which checkout ran (path, commit, dirty, label), the versions of what its code
    # imports, whether k2 was there, and the environment fixes applied around its calls (zvperf.backends.checkout).
    zipvoice: Mapping[str, Any] | None = None
    # Its end-to-end rows: the timings its generate_sentence reports itself (median seconds: t, t_no_vocoder,
    # t_vocoder, wav_seconds; rtf), the guide's "model inference" beside pytest-benchmark's total.
    official_metrics: Mapping[str, float] | None = None
    # A row timed under a stopping rule (the gate matrix): why its rounds ended (precise, time cap, max rounds), the
    # median's spread then (half its 95% interval over it), the rule's precision and time cap (zvperf.suite.timing).
    stopping: Mapping[str, Any] | None = None
    # Such a row on a CPU: a fixed workload timed before each of its rounds (zvperf.suite.timing.HostReference),
    # its description, seconds per round and their median, by which the gate takes the host's speed out.
    host_reference: Mapping[str, Any] | None = None
    other: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # keys this version does not know, kept

    @property
    def batch_size(self) -> int:
        return self.batch or 1

    @property
    def gpu_telemetry(self) -> Mapping[str, Any]:
        return self.telemetry.get("gpu") or {}

    @property
    def throttled(self) -> bool:
        return bool(self.gpu_telemetry.get("throttled"))

    @property
    def gpu_peak_memory_mib(self) -> float | None:
        """torch's peak allocation on a GPU run, or NVML's figure for this process where the backend allocates
        outside torch; None on a CPU run, and on a GPU run without either."""
        if "torch_peak_allocated_mib" in self.telemetry:
            return self.telemetry["torch_peak_allocated_mib"]
        return self.gpu_telemetry.get("process_memory_mib_peak")

    @property
    def peak_memory_mib(self) -> float | None:
        """``gpu_peak_memory_mib`` where there is one, else the process's peak resident memory."""
        gpu = self.gpu_peak_memory_mib
        return gpu if gpu is not None else (self.telemetry.get("cpu") or {}).get("rss_mib_peak")

    @property
    def device_peak_memory_mib(self) -> float | None:
        """The peak memory of the device the benchmark ran on: on a GPU the GPU's figure alone (None without one,
        never the host's resident memory in its place), else the process's resident memory. What the gate
        compares, so that a GPU row is never judged on host memory."""
        return self.gpu_peak_memory_mib if self.device == "cuda" else self.peak_memory_mib

    @property
    def joules_per_audio_second(self) -> float | None:
        """The GPU's energy per second of audio produced (the energy counter over the whole timed block); None on a
        CPU run, without NVML, or where the counter did not advance."""
        return self.gpu_telemetry.get("joules_per_audio_second")

    def with_flag(self, code: str, detail: str) -> BenchmarkFacts:
        text = f"{code}: {detail}"
        return self if text in self.flags else dataclasses.replace(self, flags=(*self.flags, text))

    def as_dict(self) -> dict[str, Any]:
        """The ``extra_info`` mapping: every key of every benchmark and of its kind, the others when set."""
        out: dict[str, Any] = {}
        for name in _FIELDS:
            value = getattr(self, name)
            if name in _OPTIONAL and name not in KIND_KEYS.get(self.kind, ()) and value is None:
                continue
            out[name] = list(value) if name == "flags" else value
        out.update(self.other)
        return out

    @classmethod
    def from_dict(cls, info: Mapping[str, Any]) -> BenchmarkFacts:
        """Raises ValueError naming the first missing key (the caller names the file and benchmark)."""
        missing = [key for key in REQUIRED_KEYS if key not in info]
        if missing:
            raise ValueError(f"lacks zvperf's extra_info key {missing[0]!r}")
        if info["kind"] not in KINDS:
            raise ValueError(f"has an unknown kind {info['kind']!r}")
        known = {key: info[key] for key in _FIELDS if key in info}
        known["flags"] = tuple(info.get("flags") or ())
        return cls(**known, other={k: v for k, v in info.items() if k not in _FIELDS})


_FIELDS = tuple(f.name for f in dataclasses.fields(BenchmarkFacts) if f.name != "other")
# Written for every benchmark (the rest only when they have a value); reading needs these at least.
REQUIRED_KEYS = (
    "kind", "audio_seconds", "rtf", "nfe", "ms_per_nfe", "frames", "model", "num_step", "backend",
    "precision", "device", "weights", "speedup_vs_zipvoice16", "telemetry",
)  # fmt: skip
_OPTIONAL = frozenset(_FIELDS[_FIELDS.index("batch") :])
# The optional keys a kind always writes (None where it has no value: the reference has no verified error).
KIND_KEYS = {
    "solver": ("batch", "guidance_scale", "verified_error", "flops", "flop_rate", "gemm_efficiency"),
    "e2e": ("stages_ms", "chunks"),
    "cold_start": ("phases_s",),
}


def benchmark_id(config_id: str, kind: str) -> str:
    """``zipvoice_distill-4step-torch-fp32 solver``: what baselines and messages call a benchmark."""
    return f"{config_id} {kind}"


@dataclasses.dataclass
class Result:
    """One benchmark of a run: pytest-benchmark's statistics and raw rounds with zvperf's facts."""

    name: str  # pytest's test name, e.g. test_solver[zipvoice_distill-4step-torch-fp32]
    config_id: str  # the parametrization id
    facts: BenchmarkFacts  # replaced (never mutated) when flags and speed-ups are added
    stats: dict[str, Any]  # pytest-benchmark's stats: median, iqr, rounds, ...
    data: list[float]  # raw round times in seconds (empty when the JSON was saved without them)

    @property
    def kind(self) -> str:
        return self.facts.kind

    @property
    def id(self) -> str:
        return benchmark_id(self.config_id, self.kind)

    @property
    def median(self) -> float:
        return float(self.stats["median"])

    @property
    def iqr(self) -> float:
        return float(self.stats["iqr"])

    @property
    def spread(self) -> float:
        """IQR / median: the relative noise of the rounds."""
        return self.iqr / self.median if self.median else float("inf")

    @property
    def host_reference(self) -> tuple[str, float] | None:
        """The fixed workload timed beside its rounds and its median seconds (a gated row on a CPU), or None."""
        reference = self.facts.host_reference
        return (str(reference["workload"]), float(reference["median"])) if reference else None

    @property
    def flags(self) -> tuple[str, ...]:
        return self.facts.flags

    @property
    def throttled(self) -> bool:
        return self.facts.throttled

    def flag(self, code: str, detail: str) -> None:
        self.facts = self.facts.with_flag(code, detail)

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any], source: str = "the results") -> Result:
        """A benchmark entry as pytest-benchmark writes it (``stats.as_dict()`` live, or from the JSON)."""
        name = entry.get("name", "?")
        info = entry.get("extra_info")
        if not isinstance(info, dict) or not info:
            raise ZvperfError(f"{source}: benchmark {name!r} has no zvperf extra_info (was it run by zvperf's suite?).")
        try:
            facts = BenchmarkFacts.from_dict(info)
        except ValueError as exc:
            raise ZvperfError(f"{source}: benchmark {name!r} {exc}.") from None
        stats = entry.get("stats")
        if not isinstance(stats, dict) or "median" not in stats:
            raise ZvperfError(f"{source}: benchmark {name!r} has no stats (median) from pytest-benchmark.")
        param = entry.get("param") or name.partition("[")[2].rstrip("]")
        rounds = entry.get("data") or stats.get("data") or []
        return cls(name, param, facts, stats, [float(x) for x in rounds])


# How a collected benchmark ended without a timing (pytest's words, and "deselected" by -k/-m).
SKIPPED, FAILED, ERROR, DESELECTED = "skipped", "failed", "error", "deselected"
OUTCOMES = (SKIPPED, FAILED, ERROR, DESELECTED)


@dataclasses.dataclass(frozen=True)
class Unmeasured:
    """A benchmark the run collected but has no timing for, and why (the skip or failure message)."""

    outcome: str  # one of OUTCOMES
    reason: str

    @property
    def broken(self) -> bool:
        """It failed or errored (a backend that disagrees with torch, a crash): never a pass."""
        return self.outcome in (FAILED, ERROR)

    @classmethod
    def from_json(cls, value: Any) -> Unmeasured:
        """Raises ValueError saying what is wrong (the caller names the file and benchmark)."""
        if not isinstance(value, dict) or value.get("outcome") not in OUTCOMES:
            raise ValueError(f"has no outcome among {', '.join(OUTCOMES)}")
        return cls(value["outcome"], str(value.get("reason", "")))


@dataclasses.dataclass
class ResultsFile:
    path: Path
    machine_info: dict[str, Any]
    commit_info: dict[str, Any]
    datetime: str
    results: list[Result]
    run: dict[str, Any] = dataclasses.field(default_factory=dict)  # the top-level "zvperf" section
    format: int = RESULTS_FORMAT
    unmeasured: dict[str, Unmeasured] = dataclasses.field(default_factory=dict)  # benchmark id -> why untimed

    @property
    def zvperf_machine(self) -> dict[str, Any]:
        return self.machine_info.get("zvperf", {})

    @property
    def gemm_rates(self) -> dict[str, Any]:
        """The attainable matrix-multiply rate per precision (format 4 on; empty before)."""
        return self.zvperf_machine.get("gemm") or {}

    @property
    def hardware_key(self) -> str:
        return self.zvperf_machine.get("hardware_key", "unknown")

    @property
    def commit(self) -> str:
        """The commit id, ``+dirty`` when the tree had changes."""
        commit = str(self.commit_info.get("id", "unknown"))
        return commit + DIRTY if self.commit_info.get("dirty") else commit


DIRTY = "+dirty"


def short_commit(commit: str) -> str:
    """A commit id cut to 12 characters, its ``+dirty`` kept: a run of changed code must not pass for the commit."""
    return commit.removesuffix(DIRTY)[:12] + (DIRTY if commit.endswith(DIRTY) else "")


def _from_format_1(document: dict[str, Any]) -> dict[str, Any]:
    """Format 1 had the same fields and no number."""
    return document


def _from_format_2(document: dict[str, Any]) -> dict[str, Any]:
    """Format 2 did not record the benchmarks it did not time: none are known."""
    document.setdefault("zvperf", {})["unmeasured"] = {}
    return document


def _from_format_3(document: dict[str, Any]) -> dict[str, Any]:
    """Format 3 had no efficiency: its solver results read with flops, flop_rate and gemm_efficiency None."""
    return document


# format N -> the document in format N + 1
_UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {
    1: _from_format_1,
    2: _from_format_2,
    3: _from_format_3,
}


def results_format(document: Mapping[str, Any]) -> int:
    section = document.get("zvperf")
    value = section.get("format", 1) if isinstance(section, dict) else 1
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def load_results(path: Path | str) -> ResultsFile:
    """Read a ``--benchmark-json`` file written by a zvperf run; bad files get one sentence naming them."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list) or "machine_info" not in data:
        raise ZvperfError(f"{path}: not pytest-benchmark output (no 'benchmarks' list and 'machine_info').")
    version = results_format(data)
    if not 1 <= version <= RESULTS_FORMAT:
        raise ZvperfError(
            f"{path}: results format {data['zvperf'].get('format')!r} is not one this zvperf reads "
            f"(1 to {RESULTS_FORMAT}): was it written by a newer version?"
        )
    for older in range(version, RESULTS_FORMAT):
        data = _UPGRADES[older](data)
    unmeasured = {}
    for name, value in (data["zvperf"].get("unmeasured") or {}).items():
        try:
            unmeasured[name] = Unmeasured.from_json(value)
        except ValueError as exc:
            raise ZvperfError(f"{path}: unmeasured benchmark {name!r} {exc}.") from None
    if not data["benchmarks"] and not unmeasured:
        raise ZvperfError(f"{path}: holds no benchmarks, and no reason why.")
    if "zvperf" not in data["machine_info"]:
        raise ZvperfError(f"{path}: machine_info lacks zvperf's section (was it run with the zvperf plugin?).")
    results = [Result.from_entry(entry, str(path)) for entry in data["benchmarks"]]
    return ResultsFile(
        path,
        data["machine_info"],
        data.get("commit_info", {}),
        data.get("datetime", ""),
        results,
        run=dict(data.get("zvperf") or {}),
        format=version,
        unmeasured=unmeasured,
    )
