"""Same-job confirmation (A/B): failed and inconclusive verdicts judged again, head against base, from processes
of both commits run alternately on this machine in this job.

A stored baseline comes from older processes, often days older: a machine whose speed drifts 10-20% from one
process to the next (docs/calibration.md), a new driver, a warmer room, all land in the comparison. asv's
``continuous`` answers this by timing both commits in the same session, interleaving them; this is the same,
made for zvperf's processes: ``zvperf.suite.confirm`` runs base, head, base, head, ... (at least six of
each), the rounds of each side are pooled, and the same rule (threshold, exact Mann-Whitney U on the processes'
medians) decides. Only the configurations that failed or were inconclusive are re-run (and, where gate.toml
sets ``confirm_above``, those that passed while slower than it), so the cost stays proportional to the doubt. The
re-run rows are a second, independent sample of the rows the first judgement picked, so their p-values are
adjusted (Benjamini-Hochberg) among themselves, not with the rows the first judgement settled: six processes a
side give p = 1/924 at the least, below alpha 0.01 for one slower row among up to nine re-run ones; five (1/252)
would not be for one among three.

A figure over its threshold (peak memory, energy per audio second: ``zvperf.gate.metrics``) is confirmed the
same way, though it is one number per run: energy is power times time and drifts with the machine as time does,
and peak memory depends on the process's history (what ran before it in the same process, the driver's context
size), which a baseline from a full run of the matrix does not share with the A/B processes of a few
configurations. Both sides' processes record their figures, and the head's median is judged against the base's
by the same threshold.
"""

from __future__ import annotations

import dataclasses

from zvperf.gate import baselines, judge
from zvperf.gate.baselines import Entry
from zvperf.gate.judge import FAIL, INCONCLUSIVE, PASS, GateReport, Verdict
from zvperf.results.schema import Result, ResultsFile

MIN_PROCESSES = 6  # per side: what the exact test needs to reach alpha 0.01 for one row among a few (above)
TO_CONFIRM = (FAIL, INCONCLUSIVE)


def to_confirm(report: GateReport) -> list[Verdict]:
    """The verdicts an A/B run can settle: measured now, compared with a baseline, failed or inconclusive, with a
    figure over its threshold, or passed while slower than their rule's ``confirm_above``."""
    return [
        v for v in report.verdicts if v.change is not None and (v.status in TO_CONFIRM or v.failing or _doubtful(v))
    ]


def _doubtful(verdict: Verdict) -> bool:
    above = verdict.rule.confirm_above
    return verdict.status == PASS and above is not None and verdict.change is not None and verdict.change > above


def _first_verdict(verdict: Verdict) -> str:
    """``fail (+42.9%)``, and the figures that failed: ``pass (+0.1%), peak memory fail (+22.9%)``."""
    said = [f"{verdict.status} ({verdict.change:+.1%})" if verdict.change is not None else verdict.status]
    said += [
        f"{m.metric.name} fail ({m.change:+.1%})" for m in verdict.metrics if m.status == FAIL and m.change is not None
    ]
    return ", ".join(said)


def pytest_name(benchmark_id: str) -> str:
    """``test_solver[zipvoice_distill-4step-torch-fp32]`` for ``zipvoice_distill-4step-torch-fp32 solver``."""
    config_id, _, kind = benchmark_id.rpartition(" ")
    return f"test_{kind}[{config_id}]"


def _zipvoice_label(runs: list[ResultsFile]) -> str | None:
    """The ZipVoice checkout a side's processes ran (``2f7326fbfe99``, ``+dirty``, or its path without git)."""
    for run in runs:
        facts = run.zvperf_machine.get("zipvoice")
        if facts:
            return facts["label"] if facts.get("commit") else f"{facts['label']} at {facts['path']}"
    return None


def _side(runs: list[ResultsFile], benchmark_id: str) -> list[tuple[Result, ResultsFile]]:
    return [(r, run) for run in runs for r in run.results if r.id == benchmark_id]


def _why_not(runs: list[ResultsFile], benchmark_id: str, side: str) -> str:
    reasons = {f"{u.outcome}: {u.reason}" for run in runs if (u := run.unmeasured.get(benchmark_id))}
    return f"the {side} commit measured no {benchmark_id}" + (f" ({'; '.join(sorted(reasons))})" if reasons else "")


def confirmed(
    report: GateReport, base_runs: list[ResultsFile], head_runs: list[ResultsFile], ids: list[str]
) -> GateReport:
    """The report with the verdicts of ``ids`` judged head against base from the A/B runs (the stored baseline's
    verdict kept, with the reason, where a side measured nothing), every verdict then decided again."""
    base_zipvoice, head_zipvoice = _zipvoice_label(base_runs), _zipvoice_label(head_runs)
    if base_zipvoice != head_zipvoice:  # two ZipVoice checkouts under one zvperf: name them
        reference, rerun = f"base ZipVoice {base_zipvoice}", "configuration(s) of the ZipVoice checkout"
        how = (
            f"{len(base_runs)} base (ZipVoice {base_zipvoice}) and {len(head_runs)} head (ZipVoice {head_zipvoice}) "
            "processes alternating in this job"
        )
    else:
        base_commit = next((run.commit for run in base_runs), "unknown")
        version = next((run.zvperf_machine.get("software", {}).get("zvperf") for run in base_runs), None)
        reference, rerun = f"base {base_commit[:12]}", "failed, inconclusive or doubtful configuration(s)"
        how = (
            f"{len(base_runs)} base ({base_commit[:12]}, zvperf {version}) and {len(head_runs)} head processes "
            "alternating in this job"
        )
    verdicts, again_judged = [], []
    for verdict in report.verdicts:
        if verdict.id not in ids:
            verdicts.append(verdict)
            continue
        base, head = _side(base_runs, verdict.id), _side(head_runs, verdict.id)
        if not base or not head:
            side, runs = ("base", base_runs) if not base else ("head", head_runs)
            verdict.warnings.append(f"not confirmed: {_why_not(runs, verdict.id, side)}")
            verdicts.append(verdict)
            continue
        entry = Entry.pooled(base)
        versions = baselines.run_versions(head[0][1])
        again = judge.judge([r for r, _ in head], entry, verdict.rule, report.hardware_key, versions)
        again.reference = reference
        again.confirmed = f"{how}; against the stored baseline it was {_first_verdict(verdict)}"
        verdicts.append(again)
        again_judged.append(again)
    judge.decide_all(again_judged)
    return dataclasses.replace(
        report,
        verdicts=verdicts,
        confirmation=f"{len(ids)} {rerun} re-run A/B: {how}, rounds pooled per side",
    )
