"""Measurement sanity: results that should not be trusted as they stand get a flag saying why.

* ``nfe-outlier``: solver time per decoder evaluation should be about constant across the step
  counts of one model/backend/precision/length; a row far above the others (like the guide's
  16-step row, 5x the per-evaluation cost of its 8-step row) has a one-off cost inside it.
* ``non-monotonic``: more decoder evaluations took less time than fewer did.
* ``noisy``: the rounds' IQR is more than 10% of their median (torch.utils.benchmark's warning level).
* ``throttled``: the GPU reported a slowing clock event (power cap, thermal, hardware slowdown).
* ``over-limit``: the solver's FLOP rate is above the machine's attainable GEMM rate or the chip's dense peak:
  impossible, so the limit (or the FLOP count) was measured wrong, and the efficiency must not be read.
"""

from __future__ import annotations

import itertools
from collections import defaultdict

from zvperf.results.schema import Result

SPREAD_LIMIT = 0.10
NFE_OUTLIER_RATIO = 1.5


def check(results: list[Result]) -> None:
    """Add sanity flags to each result's facts."""
    for result in results:
        f = result.facts
        if result.data and len(result.data) >= 3 and result.spread > SPREAD_LIMIT:
            result.flag("noisy", f"IQR is {result.spread:.0%} of the median (limit {SPREAD_LIMIT:.0%})")
        for name, value in (("attainable GEMM rate", f.gemm_efficiency), ("dense peak", f.peak_efficiency)):
            if value is not None and value > 1.0:
                result.flag("over-limit", f"{value:.0%} of the {name}: the limit or the FLOP count is wrong")
        if result.throttled:
            reasons = ", ".join(result.facts.gpu_telemetry.get("clock_event_reasons", []))
            result.flag("throttled", f"the GPU slowed its clocks during the run ({reasons})")
    groups: dict[tuple, list[Result]] = defaultdict(list)
    for result in results:
        f = result.facts
        if result.kind == "solver" and f.nfe:
            groups[(f.model, f.backend, f.precision, f.device, f.frames_bucket, f.batch_size)].append(result)
    for rows in groups.values():
        if len(rows) < 2:
            continue
        best = min(rows, key=lambda r: r.median / r.facts.nfe)
        best_per_nfe = best.median / best.facts.nfe
        for row in rows:
            ratio = row.median / row.facts.nfe / best_per_nfe
            if ratio > NFE_OUTLIER_RATIO:
                row.flag(
                    "nfe-outlier", f"{ratio:.1f}x the time per decoder evaluation of the {best.facts.num_step}-step row"
                )
        ordered = sorted(rows, key=lambda r: r.facts.nfe)
        for fewer, more in itertools.pairwise(ordered):
            if more.facts.nfe > fewer.facts.nfe and more.median < fewer.median:
                more.flag(
                    "non-monotonic",
                    f"{more.facts.nfe} evaluations took less time than {fewer.facts.nfe} "
                    f"({more.median * 1e3:.1f} ms vs {fewer.median * 1e3:.1f} ms)",
                )
