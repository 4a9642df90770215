"""Figures that need more than one result of a run: the speed-up against the zipvoice 16-step row."""

from __future__ import annotations

import dataclasses

from zvperf.results.schema import Result

REFERENCE_MODEL, REFERENCE_STEPS = "zipvoice", 16


def add_speedups(results: list[Result]) -> None:
    """Set ``speedup_vs_zipvoice16`` on solver and end-to-end results: the zipvoice 16-step row of the same
    kind, length, batch and device (torch fp32 preferred) divided by this row's median, when the run has one."""
    for result in results:
        if result.kind not in ("solver", "e2e"):
            continue
        facts = result.facts
        candidates = [
            r
            for r in results
            if r.kind == result.kind
            and r.facts.model == REFERENCE_MODEL
            and r.facts.num_step == REFERENCE_STEPS
            and r.facts.frames_bucket == facts.frames_bucket
            and r.facts.batch_size == facts.batch_size
            and r.facts.device == facts.device
        ]
        if candidates:
            reference = min(candidates, key=lambda r: (r.facts.backend != "torch", r.facts.precision != "fp32"))
            result.facts = dataclasses.replace(facts, speedup_vs_zipvoice16=reference.median / result.median)
