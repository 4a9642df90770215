"""What the report says, derived from the results: rows, derived picks and commands, as template-ready values.

Every number here comes straight from one benchmark's stats or extra_info (nothing is typed in), and is
formatted in one place so that the tables, the plots and the tests agree digit for digit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from typing import Any

from zvperf.errors import ZvperfError
from zvperf.results.schema import BenchmarkFacts, Result, ResultsFile
from zvperf.results.summary import gflops, percent

# The generated parts of a report; each is wrapped in <!-- zvperf:begin NAME --> ... <!-- zvperf:end NAME -->.
PARTS = (
    "environment", "official", "summary", "backends", "telemetry", "findings", "recommendations", "flags", "plots",
    "history",
)  # fmt: skip
# The quality pick is the undistilled model; the balance pick, the distilled one.
FULL_MODEL = "zipvoice"
DISTILLED_MODEL = "zipvoice_distill"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def fmt_rtf(rtf: float) -> str:
    return f"{rtf:.4f}"


def fmt_speedup(speedup: float | None) -> str:
    return f"{speedup:.2f}x" if speedup else "-"


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@dataclasses.dataclass
class Row:
    """One timed configuration (a summary-table row): its solver and end-to-end results."""

    config_id: str
    solver: Result | None = None
    e2e: Result | None = None

    @property
    def main(self) -> Result:
        """The end-to-end result, or the solver's where the run timed only the solver."""
        main = self.e2e or self.solver
        assert main is not None, "a Row is only made for a solver or e2e result"
        return main

    @property
    def facts(self) -> BenchmarkFacts:
        return self.main.facts

    @property
    def model(self) -> str:
        return self.facts.model

    @property
    def num_step(self) -> int:
        assert self.facts.num_step is not None, "solver and e2e results have a step count"
        return self.facts.num_step

    @property
    def backend(self) -> str:
        return self.facts.backend

    @property
    def precision(self) -> str:
        return self.facts.precision

    @property
    def frames_bucket(self) -> int | None:
        return self.facts.frames_bucket

    @property
    def seconds(self) -> float:
        return self.main.median

    @property
    def rtf(self) -> float:
        return float(self.facts.rtf or 0.0)

    @property
    def speedup(self) -> float | None:
        return self.facts.speedup_vs_zipvoice16

    @property
    def synthetic(self) -> bool:
        return self.facts.weights == "synthetic"

    @property
    def line(self) -> tuple[str, str, int | None]:
        """The plot line this row belongs to: model, backend-precision and decoder length."""
        return self.model, f"{self.backend}-{self.precision}", self.frames_bucket


@dataclasses.dataclass
class Section:
    """Everything measured on one hardware key, possibly from several files."""

    key: str
    files: list[ResultsFile]
    rows: list[Row]

    @property
    def results(self) -> list[Result]:
        return [r for f in self.files for r in f.results]

    @property
    def device(self) -> str:
        return self.files[0].zvperf_machine.get("device") or self.rows[0].facts.device


def sections(files: list[ResultsFile]) -> list[Section]:
    """Group the files by hardware key (in the order given) and pair each configuration's solver and e2e results."""
    by_key: dict[str, list[ResultsFile]] = defaultdict(list)
    for results_file in files:
        by_key[results_file.hardware_key].append(results_file)
    grouped = []
    for key, key_files in by_key.items():
        rows: dict[str, Row] = {}
        seen: dict[str, ResultsFile] = {}
        for results_file in key_files:
            for result in results_file.results:
                if result.id in seen:
                    raise ZvperfError(
                        f"{results_file.path}: benchmark {result.id!r} is also in {seen[result.id].path} "
                        f"(same hardware key {key!r}); report one of them."
                    )
                seen[result.id] = results_file
                if result.kind in ("solver", "e2e"):
                    row = rows.setdefault(result.config_id, Row(result.config_id))
                    setattr(row, result.kind, result)
        if not rows:
            raise ZvperfError(f"{key_files[0].path}: holds no solver or e2e benchmarks to report.")
        grouped.append(Section(key, key_files, list(rows.values())))
    return grouped


def _when(stamp: str) -> str:
    try:
        moment = dt.datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M") + (" UTC" if moment.tzinfo is not None else "")


def environment(section: Section) -> dict[str, Any]:
    """The machine and software of the section's first file (files of one hardware key share the machine)."""
    first = section.files[0]
    machine, info = first.zvperf_machine, first.machine_info
    software = machine.get("software") or {}
    weights = sorted({r.facts.weights for r in section.results})
    return {
        "device": section.device,
        "gpu": machine.get("gpu"),  # name, memory_gib, compute_capability, count, driver (None on a CPU run)
        "driver": (machine.get("gpu") or {}).get("driver"),
        "cpu": machine.get("cpu"),
        # "family 26 model 2": what tells apart CPUs that report one generic name (recorded from format 3 on)
        "cpu_id": f"family {machine['cpu_family']} model {machine.get('cpu_model_number')}"
        if machine.get("cpu_family")
        else None,
        "cpu_isa": machine.get("cpu_isa"),  # the widest vector ISA level, e.g. avx512-bf16 (format 3 on)
        "cpu_cores": machine.get("cpu_cores"),
        "torch_threads": machine.get("torch_threads"),
        "os": " ".join(filter(None, (info.get("system"), info.get("release")))) or None,
        "python": software.get("python") or info.get("python_version"),
        "torch": software.get("torch"),
        "cuda": software.get("cuda"),
        "tensorrt": software.get("tensorrt"),
        "onnxruntime": software.get("onnxruntime"),
        "weights": weights,
        "synthetic": "synthetic" in weights,
        "gemm": gemm_rates(section),
        "sources": [
            {
                "file": f.path.name,
                "datetime": _when(f.datetime),
                "commit": (f.commit_info.get("id") or "")[:12] or None,
                "dirty": bool(f.commit_info.get("dirty")),
            }
            for f in section.files
        ],
    }


def gemm_rates(section: Section) -> list[dict[str, Any]]:
    """The attainable matrix-multiply rate of each precision each file measured (zvperf.suite.gemm), with every
    implementation's rate; ``file`` is set when several files of the section measured one."""
    measured = [f for f in section.files if f.gemm_rates]
    entries = []
    for results_file in measured:
        for precision, rate in results_file.gemm_rates.items():
            if not rate:
                continue
            entries.append(
                {
                    "precision": precision,
                    "gflops": gflops(rate["flop_rate"]),
                    "method": rate["method"],
                    "rates": ", ".join(f"{name} {gflops(value)}" for name, value in rate["rates"].items()),
                    "frames": rate.get("frames"),
                    "threads": rate.get("threads"),
                    "peak": gflops(rate["peak"]["flop_rate"]) if rate.get("peak") else None,
                    "peak_how": rate["peak"]["how"] if rate.get("peak") else None,
                    "file": results_file.path.name if len(measured) > 1 else None,
                }
            )
    return entries


def efficiency(section: Section) -> dict[str, Any]:
    """Per solver row: its time, the FLOPs of one call, the FLOP rate it achieved, that rate as a fraction of the
    machine's attainable GEMM rate in its precision, and its error against the torch fp32 reference."""
    rows = [
        {
            "configuration": row.config_id,
            "solver_ms": ms(row.solver.median),
            "gflop": _number(row.solver.facts.flops / 1e9 if row.solver.facts.flops else None, 1),
            "gflops": gflops(row.solver.facts.flop_rate),
            "efficiency": percent(row.solver.facts.gemm_efficiency),
            "peak": percent(row.solver.facts.peak_efficiency),
            "error": "-" if row.solver.facts.verified_error is None else f"{row.solver.facts.verified_error:.1e}",
        }
        for row in section.rows
        if row.solver
    ]
    measured = any(row["gflops"] != "-" for row in rows)
    return {"rows": rows, "measured": measured, "peak": any(row["peak"] != "-" for row in rows)}


def _flag_marks(section: Section) -> dict[str, int]:
    """A footnote number per flagged configuration: summary rows first, in table order, then the rest."""
    order = [row.config_id for row in section.rows] + [r.config_id for r in section.results]
    flagged = {r.config_id for r in section.results if r.flags}
    marks: dict[str, int] = {}
    for config_id in order:
        if config_id in flagged and config_id not in marks:
            marks[config_id] = len(marks) + 1
    return marks


def summary(section: Section, marks: dict[str, int]) -> dict[str, Any]:
    """The guide's table: configuration, solver ms, end-to-end ms, RTF, speed-up; the best speed-up in bold."""
    best = max((row for row in section.rows if row.speedup), key=lambda row: row.speedup or 0.0, default=None)
    return {
        "rows": [
            {
                "configuration": row.config_id,
                "solver_ms": ms(row.solver.median) if row.solver else "-",
                "e2e_ms": ms(row.e2e.median) if row.e2e else "-",
                "rtf": fmt_rtf(row.rtf),
                "speedup": fmt_speedup(row.speedup),
                "best": row is best,
                "mark": marks.get(row.config_id),
            }
            for row in section.rows
        ],
        "has_reference": best is not None,
        "solver_fallback": any(row.e2e is None for row in section.rows),
        "synthetic": any(row.synthetic for row in section.rows),
    }


def official(section: Section) -> dict[str, Any]:
    """ZipVoice as shipped: the rows that ran the user's ZipVoice checkout, as the seed guide tabled them (model
    inference and total time, RTF, speed-up over its zipvoice 16-step row), each with zvperf's rows of the same
    model and step count on this machine and how many times faster they are. Empty without such rows."""
    ran = [row for row in section.rows if row.facts.zipvoice]
    if not ran:
        return {"rows": [], "checkout": None}
    reference = next((r.e2e for r in ran if r.model == FULL_MODEL and r.num_step == 16 and r.e2e), None)
    rows = []
    for row in ran:
        own = row.e2e.facts.official_metrics if row.e2e else None
        beside = [
            other for other in section.rows
            if not other.facts.zipvoice and (other.model, other.num_step, other.frames_bucket)
            == (row.model, row.num_step, row.frames_bucket)
        ]  # fmt: skip
        rows.append(
            {
                "configuration": row.config_id,
                # Its own timer's "model inference" (text encoder, solve, vocoder) where it reported one, else the
                # solver benchmark's median.
                "inference_ms": ms(own["t"]) if own else (ms(row.solver.median) if row.solver else "-"),
                "total_ms": ms(row.e2e.median) if row.e2e else "-",
                "rtf": fmt_rtf(own["rtf"]) if own else fmt_rtf(row.rtf),
                "speedup": fmt_speedup(reference.median / row.e2e.median) if reference and row.e2e else "-",
                "zvperf": [
                    {
                        "configuration": other.config_id,
                        "ms": ms(other.seconds),
                        "ratio": fmt_speedup(row.seconds / other.seconds),
                    }
                    for other in beside
                    if (other.e2e is None) == (row.e2e is None)  # the same measure on both sides
                ],
            }
        )
    return {"rows": rows, "checkout": dict(ran[0].facts.zipvoice or {})}


def backends(section: Section) -> dict[str, Any]:
    """Solver ms for each (model, steps[, length]) across backend/precision columns; the fastest cell in bold."""
    columns = list(dict.fromkeys(f"{r.backend}-{r.precision}" for r in section.rows if r.solver))
    table: dict[tuple[str, int, int | None], dict[str, float]] = defaultdict(dict)
    for row in section.rows:
        if row.solver:
            table[(row.model, row.num_step, row.frames_bucket)][f"{row.backend}-{row.precision}"] = row.solver.median
    rows = []
    for (model, num_step, frames), cells in table.items():
        fastest = min(cells.values())
        rows.append(
            {
                "model": model,
                "num_step": num_step,
                "frames": frames,
                "cells": [
                    {"text": ms(cells[c]), "best": len(cells) > 1 and cells[c] == fastest}
                    if c in cells
                    else {"text": "-", "best": False}
                    for c in columns
                ],
            }
        )
    return {"columns": columns, "rows": rows}


def _memory(result: Result) -> tuple[float | None, str | None]:
    """Peak memory and where it was measured: torch's allocator, NVML (this process, else the whole GPU: what
    rows of backends with their own allocator have), or the process RSS on a CPU."""
    telemetry = result.facts.telemetry
    gpu = result.facts.gpu_telemetry
    if telemetry.get("torch_peak_allocated_mib") is not None:
        return telemetry["torch_peak_allocated_mib"], "torch"
    if gpu.get("process_memory_mib_peak") is not None:
        return gpu["process_memory_mib_peak"], "nvml-process"
    if gpu.get("memory_used_mib_peak") is not None:
        return gpu["memory_used_mib_peak"], "nvml"
    rss = (telemetry.get("cpu") or {}).get("rss_mib_peak")
    return rss, "rss" if rss is not None else None


def telemetry(section: Section) -> dict[str, Any]:
    """Per configuration, from its end-to-end run (the solver's where there is none): memory, power, energy."""
    rows, sources = [], []
    for row in section.rows:
        memory, source = _memory(row.main)
        if source and source not in sources:
            sources.append(source)
        rows.append(
            {
                "configuration": row.config_id,
                "kind": row.main.kind,
                "memory_mib": _number(memory, 0),
                "power_w": _number(row.facts.gpu_telemetry.get("power_w_mean"), 1),
                "joules_per_audio_second": _number(row.facts.joules_per_audio_second, 2),
            }
        )
    # Why power and energy are missing, when they are (a CPU run, or NVML absent): the suite's own words.
    reasons = [
        row.facts.gpu_telemetry.get("reason") for row in section.rows if not row.facts.gpu_telemetry.get("available")
    ]
    return {"rows": rows, "memory_sources": sources, "gpu_unavailable_reason": next(filter(None, reasons), None)}


def findings(section: Section) -> dict[str, Any]:
    """Facts read off the data: the solver's share of the end-to-end time and the time per decoder evaluation."""
    shares = [
        stages["solver"] / stages["total"]
        for row in section.rows
        if row.e2e and (stages := row.e2e.facts.stages_ms) and stages.get("total")
    ]
    per_nfe: dict[tuple[str, str, int | None], list[float]] = defaultdict(list)
    for row in section.rows:
        if row.solver and row.solver.facts.ms_per_nfe:
            per_nfe[row.line].append(row.solver.facts.ms_per_nfe)
    return {
        "solver_share": {"min": f"{min(shares):.1%}", "max": f"{max(shares):.1%}", "dominant": min(shares) > 0.5}
        if shares
        else None,
        "ms_per_nfe": [
            {
                "model": model,
                "variant": variant,
                "frames": frames,
                "min": f"{min(values):.1f}",
                "max": f"{max(values):.1f}",
                "steps": len(values),
            }
            for (model, variant, frames), values in per_nfe.items()
        ],
    }


def bench_command(row: Row) -> str:
    """The pytest line that times exactly this row again (both its solver and end-to-end benchmarks)."""
    parts = [
        "pytest --benchmark-only",
        f"--zv-device {row.facts.device}",
        f"--zv-models {row.model}",
        f"--zv-steps {row.num_step}",
        f"--zv-backends {row.backend}",
        f"--zv-precision {row.precision}",
    ]
    if row.frames_bucket:
        parts.append(f"--zv-lengths {row.frames_bucket}")
    if row.synthetic:
        parts.append("--zv-weights synthetic")
    if row.main.stats.get("rounds"):
        parts.append(f"--zv-rounds {row.main.stats['rounds']}")
    parts.append(f'-k "{row.config_id}"')
    return " ".join(parts)


def synth_command(row: Row) -> str:
    """The ``zvperf synth`` line that synthesises with this row's settings."""
    parts = ["zvperf synth", f"--model {row.model}", f"--num-step {row.num_step}"]
    if row.backend != "torch":
        parts.append(f"--backend {row.backend}")
    parts += [f"--device {row.facts.device}", f"--precision {row.precision}"]
    if row.synthetic:
        parts.append("--weights synthetic")
    return " ".join(parts)


def _pick(row: Row | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "configuration": row.config_id,
        "model": row.model,
        "num_step": row.num_step,
        "backend": row.backend,
        "precision": row.precision,
        "time_ms": ms(row.seconds),
        "time_kind": row.main.kind,
        "rtf": fmt_rtf(row.rtf),
        "speedup": fmt_speedup(row.speedup),
        "synth_command": synth_command(row),
        "bench_command": bench_command(row),
    }


def _fastest(rows: list[Row]) -> Row | None:
    """Least time, comparing end-to-end times where a row has one (solver-only rows come after)."""
    return min(rows, key=lambda row: (row.e2e is None, row.seconds), default=None)


def quality_pick(rows: list[Row]) -> Row | None:
    """The undistilled model at its most measured steps, in fp32 when measured (then the fastest such row)."""
    full = [row for row in rows if row.model == FULL_MODEL]
    if not full:
        return None
    most = max(row.num_step for row in full)
    candidates = [row for row in full if row.num_step == most]
    return _fastest([row for row in candidates if row.precision == "fp32"] or candidates)


def balance_pick(rows: list[Row]) -> Row | None:
    """The distilled model at the middle of its step counts that run faster than real time (RTF < 1)."""
    realtime = [row for row in rows if row.model == DISTILLED_MODEL and row.rtf < 1]
    steps = sorted({row.num_step for row in realtime})
    if not steps:
        return None
    middle = steps[len(steps) // 2]
    return _fastest([row for row in realtime if row.num_step == middle])


def recommendations(section: Section) -> dict[str, Any]:
    """Picks among the configurations timed end to end, when there are any: a solver-only row (a fixed length,
    a batch) times one part of synthesis and is not a setting to recommend by itself."""
    rows = [row for row in section.rows if row.e2e] or section.rows
    models = list(dict.fromkeys(row.model for row in rows))
    return {
        "quality": _pick(quality_pick(rows)),
        "balance": _pick(balance_pick(rows)),
        "speed": _pick(_fastest(rows)),
        "fastest_per_model": [_pick(_fastest([row for row in rows if row.model == model])) for model in models],
        "fastest_realtime": _pick(_fastest([row for row in rows if row.rtf < 1])),
        "reproduce": [{"configuration": row.config_id, "command": bench_command(row)} for row in section.rows],
    }


def flags(section: Section, marks: dict[str, int]) -> dict[str, Any]:
    """Each flagged configuration with its footnote number and its benchmarks' flags, split into code and detail."""
    entries: dict[str, list[dict[str, str]]] = defaultdict(list)
    for result in section.results:
        for text in result.flags:
            code, _, detail = text.partition(": ")
            entries[result.config_id].append({"kind": result.kind, "code": code, "detail": detail})
    summary_ids = {row.config_id for row in section.rows}
    return {
        "entries": [
            {"mark": mark, "configuration": cid, "in_summary": cid in summary_ids, "notes": entries[cid]}
            for cid, mark in sorted(marks.items(), key=lambda item: item[1])
        ],
        "codes": list(dict.fromkeys(item["code"] for items in entries.values() for item in items)),
    }


def section_context(
    section: Section, blocks: dict[str, str], plots: dict[str, str], history: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One hardware key's part of the template context (see zvperf.report.render for the whole); ``history`` is
    zvperf.report.trends.context's, when the report was asked for the history."""
    marks = _flag_marks(section)
    return {
        "key": section.key,
        "blocks": blocks,
        "environment": environment(section),
        "official": official(section),
        "summary": summary(section, marks),
        "backends": backends(section),
        "efficiency": efficiency(section),
        "telemetry": telemetry(section),
        "findings": findings(section),
        "recommendations": recommendations(section),
        "flags": flags(section, marks),
        "plots": plots,
        "history": history,
    }
