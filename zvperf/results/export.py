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
``<id> - latency`` (unit ``ms``), ``<id> - rtf`` (``RTF``), ``<id> - peak memory`` (``MiB``) and ``<id> - energy
per audio second`` (``J/s of audio``); ``extra`` is the tooltip (rounds, hardware key, commit with ``+dirty`` when the
tree had changes, flags). The latency's ``range`` (a free string to the action) is ``-a +b``: from the median down to
the first quartile and up to the third, in ms, as the rounds' median is seldom centred between them; a file saved
without quartiles gives no range. The action matches entries across commits by name, so give each hardware key its
own ``name:`` input.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from zvperf.errors import ZvperfError
from zvperf.results.schema import Result, ResultsFile, short_commit

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


def _quartiles(result: Result) -> tuple[float, float] | None:
    """The rounds' first and third quartiles in seconds (pytest-benchmark's q1 and q3), when the file has them."""
    if "q1" in result.stats and "q3" in result.stats:
        return float(result.stats["q1"]), float(result.stats["q3"])
    return None


def to_bencher(results: ResultsFile) -> dict[str, dict[str, dict[str, float]]]:
    """The Bencher Metric Format document of a run."""
    document = {}
    for result in _exported(results):
        latency = {"value": result.median * 1e9}
        quartiles = _quartiles(result)
        if quartiles:
            latency.update(lower_value=quartiles[0] * 1e9, upper_value=quartiles[1] * 1e9)
        measures = {"latency": latency}
        measures.update({BENCHER_MEASURES[what]: {"value": value} for what, value in _figures(result)})
        document[result.id] = measures
    return document


def to_github_action_benchmark(results: ResultsFile) -> list[dict[str, Any]]:
    """github-action-benchmark's customSmallerIsBetter entries of a run."""
    entries = []
    for result in _exported(results):
        notes = [f"median of {result.stats.get('rounds', len(result.data))} rounds", results.hardware_key]
        notes.append(f"commit {short_commit(results.commit)}")
        notes += [f"flag {flag}" for flag in result.flags]
        latency = {"name": f"{result.id} - latency", "unit": "ms", "value": result.median * 1e3}
        quartiles = _quartiles(result)
        if quartiles:
            low, high = ((result.median - quartiles[0]) * 1e3, (quartiles[1] - result.median) * 1e3)
            latency["range"] = f"-{low:.6g} +{high:.6g}"
        entries.append({**latency, "extra": "\n".join(notes)})
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
