"""Results in the formats of the dashboards teams already run: Bencher Metric Format and github-action-benchmark's
``customSmallerIsBetter``, so a zvperf run is pushed into either without a converter of one's own.

Per benchmark (the id the gate uses, ``zipvoice_distill-4step-torch-fp32 solver``) four figures, all smaller is
better: the latency (median of the rounds), the RTF, the peak memory in MiB, and the GPU energy per second of audio
produced in joules; each only where the run measured it. Results timed with an injected slowdown are left out.

**Bencher Metric Format** (https://bencher.dev/docs/reference/bencher-metric-format/, JSON schema
https://bencher.dev/bmf.json): ``{benchmark: {measure: {"value": v, "lower_value": lo, "upper_value": hi}}}``.
The latency goes in Bencher's built-in ``latency`` measure, whose unit is the nanosecond (the console scales it
for display), with the rounds' first and third quartiles as lower and upper values; ``rtf``, ``peak-memory-mib``
and ``energy-per-audio-second`` are measure slugs Bencher creates on the first upload, with generic units. The
hardware key is Bencher's testbed, not part of the name: ``bencher run --testbed <key> --adapter json --file
bmf.json``.

**github-action-benchmark** (README, "customBiggerIsBetter and customSmallerIsBetter"; ``src/extract.ts``): a JSON
array of ``{"name", "unit", "value", "range", "extra"}``, for ``tool: customSmallerIsBetter``. Names are
``<id> - latency`` (unit ``ms``, range ``± IQR/2``), ``<id> - rtf`` (``RTF``), ``<id> - peak memory`` (``MiB``)
and ``<id> - energy per audio second`` (``J/s of audio``); ``extra`` is the tooltip (rounds, hardware key, commit,
flags). The action matches entries across commits by name, so give each hardware key its own ``name:`` input.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from zvperf.errors import ZvperfError
from zvperf.results.schema import Result, ResultsFile

FORMATS = ("bencher", "github-action-benchmark")
# Each figure besides the latency: its Bencher measure slug and its github-action-benchmark unit.
BENCHER_MEASURES = {
    "rtf": "rtf",
    "peak memory": "peak-memory-mib",
    "energy per audio second": "energy-per-audio-second",
}
GITHUB_UNITS = {"rtf": "RTF", "peak memory": "MiB", "energy per audio second": "J/s of audio"}


def _figures(result: Result) -> Iterator[tuple[str, float]]:
    """The figures other than the latency that the run measured: (what, value)."""
    facts = result.facts
    extra = {
        "rtf": facts.rtf,
        "peak memory": facts.peak_memory_mib,
        "energy per audio second": facts.joules_per_audio_second,
    }
    for what, value in extra.items():
        if value is not None:
            yield what, float(value)


def _exported(results: ResultsFile) -> list[Result]:
    kept = [result for result in results.results if not result.facts.injected_slowdown]
    if not kept:
        raise ZvperfError(f"{results.path}: every benchmark has an injected slowdown; there is nothing to export.")
    return kept


def to_bencher(results: ResultsFile) -> dict[str, dict[str, dict[str, float]]]:
    """The Bencher Metric Format document of a run."""
    document = {}
    for result in _exported(results):
        latency = {"value": result.median * 1e9}
        if "q1" in result.stats and "q3" in result.stats:
            latency.update(lower_value=float(result.stats["q1"]) * 1e9, upper_value=float(result.stats["q3"]) * 1e9)
        measures = {"latency": latency}
        measures.update({BENCHER_MEASURES[what]: {"value": value} for what, value in _figures(result)})
        document[result.id] = measures
    return document


def to_github_action_benchmark(results: ResultsFile) -> list[dict[str, Any]]:
    """github-action-benchmark's customSmallerIsBetter entries of a run."""
    entries = []
    for result in _exported(results):
        notes = [f"median of {result.stats.get('rounds', len(result.data))} rounds", results.hardware_key]
        notes.append(f"commit {results.commit[:12]}")
        notes += [f"flag {flag}" for flag in result.flags]
        entries.append(
            {
                "name": f"{result.id} - latency",
                "unit": "ms",
                "value": result.median * 1e3,
                "range": f"± {result.iqr * 1e3 / 2:.6g}",
                "extra": "\n".join(notes),
            }
        )
        entries += [
            {"name": f"{result.id} - {what}", "unit": GITHUB_UNITS[what], "value": value}
            for what, value in _figures(result)
        ]
    return entries


def export(results: ResultsFile, format: str) -> str:
    """The run as JSON text in ``format`` (one of FORMATS)."""
    if format == "bencher":
        document: Any = to_bencher(results)
    elif format == "github-action-benchmark":
        document = to_github_action_benchmark(results)
    else:
        raise ZvperfError(f"--format {format!r} is not one of {', '.join(FORMATS)}.")
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
