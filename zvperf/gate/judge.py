"""The regression gate: judge each result against its baseline on the same hardware key.

A benchmark **fails** when its median is slower than the baseline's by more than the threshold (default 10%)
*and* a one-sided exact Mann-Whitney U test on the medians of the separate processes on each side says the new
ones are larger (p < alpha, default 0.01, after the Benjamini-Hochberg adjustment over every test of the run:
``zvperf.gate.stats``). The run's side pools the processes it was given (``zvperf compare A.json B.json C.json``;
the gate matrix runs three), the baseline the runs it was updated from (the gate matrix's eight). On processes,
not rounds: a process's rounds share its state, and processes of unchanged code differ by more than their rounds
do (a text encoder measured 21% slower in one process than in three others, every round of it above theirs:
p = 0.001 on rounds, and no change). The threshold keeps a significant but negligible drift from failing; the test
keeps a noisy median from failing. On a CPU a gated row's processes also timed a fixed workload beside their
rounds; under ``host_adjusted`` (gate.toml) each process's median is read over that reference's, which takes out
the host's speed at the time, which drifts over minutes on a shared VM (``host_references``, docs/calibration.md).

A side of one process cannot be judged: its drift cannot be told from a change. Nor can sides too small for the
exact test ever to reach alpha (its smallest p is 1 / C(k+m, k): 0.05 for three processes against three, 0.006
for three against eight). Such a row is *inconclusive* and says so, never a pass, and ``--require-baseline`` fails
the run (pool more runs, or let CI's A/B confirmation judge it). Inconclusive too: a result or baseline whose
processes' rounds spread more than ``max_spread`` of their median (IQR, the median over its processes; the drift
between processes is the test's to weigh), a baseline entry of an older format that pooled several
runs without keeping their medians, a throttled GPU, and a slowdown beyond the threshold that is not significant
(it may be real: confirm it, ``zvperf.gate.confirm``).

Nothing unjudged passes: a baseline entry the run skipped is **missing** (with the reason the run recorded)
unless gate.toml expects it to be absent on this hardware, and a benchmark that failed or errored (a backend
that disagrees with torch) **errored**; both fail the gate. A baseline entry the run never asked for (outside
its matrix, or deselected) is **not run**: said and not judged, so comparing a partial or other run judges what
it measured, never a pass; ``--require-baseline`` (CI's gate) asks for every configuration of the baseline and
fails such a run. A missing baseline, another hardware key, other CPU flags, different software versions or
weights, and an injected slowdown are said with the verdicts.

Where gate.toml sets their thresholds, a judged benchmark's peak memory and GPU energy per second of audio are
judged too (``zvperf.gate.metrics``): one number per run, so a plain threshold on the change against the median
of the baseline's per-run figures, without a test and outside the Benjamini-Hochberg adjustment (it has no
p-value). A figure over its threshold fails the gate as a slowdown does; a figure missing on either side is
said, never failed.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_benchmark.stats import Stats

from zvperf.gate import baselines, metrics
from zvperf.gate.baselines import Entry
from zvperf.gate.config import CONFIG_NAME, GateConfig, Rule
from zvperf.gate.numbers import p_number, seconds
from zvperf.gate.stats import MIN_SIDE, benjamini_hochberg, min_p_value, process_test, reaches_alpha
from zvperf.results.schema import DESELECTED, Result, ResultsFile, Unmeasured

FAIL, IMPROVED, PASS, INCONCLUSIVE, NO_BASELINE = "fail", "improved", "pass", "inconclusive", "no baseline"
MISSING, ERRORED, SKIPPED, ABSENT, NOT_RUN = "missing", "errored", "skipped", "absent", "not run"
FAILING = (FAIL, MISSING, ERRORED)  # the statuses that fail the gate
JUDGED = (FAIL, IMPROVED, PASS)  # a decision was reached
# In the order the last line counts them.
STATUSES = (FAIL, IMPROVED, PASS, INCONCLUSIVE, NO_BASELINE, MISSING, ERRORED, SKIPPED, NOT_RUN, ABSENT)
_COUNTED_AS = {
    FAIL: "slower",
    IMPROVED: "improved",
    PASS: "passed",
    INCONCLUSIVE: "inconclusive",
    NO_BASELINE: "without a baseline",
    MISSING: "missing",
    ERRORED: "errored",
    SKIPPED: "skipped",
    NOT_RUN: "not in this run",
    ABSENT: "absent as expected",
}
NO_FIGURE = "no figure"  # a metric verdict with no figure on one side, or both
METRIC_STATUSES = (FAIL, IMPROVED, PASS, INCONCLUSIVE, NO_FIGURE)
_METRIC_COUNTED_AS = {
    FAIL: "over the threshold",
    IMPROVED: "improved",
    PASS: "within",
    INCONCLUSIVE: "inconclusive",
    NO_FIGURE: "without a figure",
}


def p_text(p: float | None, name: str = "p") -> str:
    if p is None:
        return f"{name}=n/a"
    number = p_number(p)
    return f"{name}{number}" if number.startswith("<") else f"{name}={number}"


def gpu_state(result: Result) -> str:
    """The GPU's clock, temperature and throttling during the run, as the verdict table shows them."""
    gpu = result.facts.gpu_telemetry
    if not gpu.get("available"):
        return "-"
    parts = []
    if gpu.get("sm_clock_mhz_median") is not None:
        parts.append(f"{gpu['sm_clock_mhz_median']:.0f} MHz")
    if gpu.get("temperature_c_max") is not None:
        parts.append(f"{gpu['temperature_c_max']:.0f} C")
    reasons = ", ".join(gpu.get("clock_event_reasons") or [])
    parts.append(f"throttled ({reasons})" if gpu.get("throttled") else "not throttled")
    return ", ".join(parts)


@dataclasses.dataclass
class MetricVerdict:
    """One figure of a judged benchmark (peak memory, energy per audio second) against its reference."""

    metric: metrics.Metric
    status: str  # one of METRIC_STATUSES
    threshold: float
    value: float | None = None  # the run's figure (in an A/B confirmation, the median of the head's processes)
    reference: float | None = None  # the median of the baseline's per-run figures (or of the base's processes)
    change: float | None = None  # value / reference - 1
    runs: tuple[int, int] = (0, 0)  # figures on each side (new, reference)
    reason: str = ""  # why it has no figure or is inconclusive

    @property
    def label(self) -> str:
        return "FAIL" if self.status == FAIL else self.status

    def describe(self, reference: str) -> str:
        """``peak memory 1843 MiB vs baseline 1500 MiB (+22.9%, threshold 10%, runs=1/3)``"""
        if self.value is None or self.reference is None or self.change is None:
            return f"{self.metric.name}: {self.reason}"
        n, m = self.runs
        text = (
            f"{self.metric.name} {self.metric.text(self.value)} vs {reference} {self.metric.text(self.reference)} "
            f"({self.change:+.1%}, threshold {self.threshold:.0%}, runs={n}/{m})"
        )
        return text + (f": {self.reason}" if self.reason else "")

    def to_json(self) -> dict[str, Any]:
        value = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "metric"}
        metric = {"metric": self.metric.name, "unit": self.metric.unit, "decimals": self.metric.decimals}
        return {**metric, **value, "label": self.label}


def judge_figure(
    metric: metrics.Metric, threshold: float, new: list[float], old: list[float], result: Result, baseline: Entry
) -> MetricVerdict:
    """A figure that is one number per run: the median of each side's per-run figures, and a plain threshold on
    their relative change (no rounds, so no test)."""
    verdict = MetricVerdict(metric, NO_FIGURE, threshold, runs=(len(new), len(old)))
    if not new or not old:
        if new:
            verdict.reason = "the baseline has none (its runs measured none, or it was stored before zvperf kept them)"
        else:
            which = "the run has none" if old else "neither the run nor the baseline has one"
            verdict.reason = f"{which} ({metric.why_none(result.facts)})"
        return verdict
    verdict.value, verdict.reference = statistics.median(new), statistics.median(old)
    verdict.change = verdict.value / verdict.reference - 1 if verdict.reference else math.inf
    if metric.throttle_sensitive and (result.throttled or baseline.throttled):
        verdict.status = INCONCLUSIVE
        verdict.reason = f"the GPU throttled during the {'run' if result.throttled else 'baseline run'}"
    elif verdict.change > threshold:
        verdict.status = FAIL
    elif verdict.change < -threshold:
        verdict.status = IMPROVED
    else:
        verdict.status = PASS
    return verdict


@dataclasses.dataclass
class Verdict:
    id: str
    status: str
    hardware_key: str
    reason: str = ""  # why it is inconclusive, missing, errored, skipped or absent
    warnings: list[str] = dataclasses.field(default_factory=list)
    median: float | None = None
    baseline_median: float | None = None
    change: float | None = None  # new median / baseline median - 1 (host-adjusted: of the adjusted process medians)
    raw_change: float | None = None  # host-adjusted: the pooled medians' change, the host's speed left in
    host_change: float | None = None  # host-adjusted: the reference workload's median time, run over baseline - 1
    p: float | None = None  # one-sided exact Mann-Whitney U on the process medians
    p_adjusted: float | None = None  # Benjamini-Hochberg over the run's tests
    method: str | None = None  # how p was computed (zvperf.gate.stats)
    rounds: tuple[int, int] | None = None  # (new, baseline)
    processes: tuple[int, int] | None = None  # (new, baseline): the medians the test compared
    gpu: str = "-"
    reference: str = "baseline"  # what the median was compared with: the stored baseline, or the base commit
    confirmed: str = ""  # how an A/B confirmation in this job decided it, when one did
    problems: list[str] = dataclasses.field(default_factory=list)  # why it cannot be judged (noise, rounds)
    rule: Rule = Rule()
    metrics: list[MetricVerdict] = dataclasses.field(default_factory=list)  # figures gate.toml asks to judge

    @property
    def failing(self) -> bool:
        """It fails the gate: by its status, or by a figure over its threshold."""
        return self.status in FAILING or any(m.status == FAIL for m in self.metrics)

    @property
    def message(self) -> str:
        """``<id>: median 3.61 s vs baseline 3.02 s (+19.5%, p=0.006 exact, p_adj=0.006, processes=3/8, n=21/56) on
        cpu-xeon-2c``"""
        if self.median is None:
            return f"{self.id} on {self.hardware_key}"
        if self.baseline_median is None:
            return f"{self.id}: median {seconds(self.median)} on {self.hardware_key}"
        assert self.change is not None and self.rounds is not None
        test = f"{p_text(self.p)} {self.method}, {p_text(self.p_adjusted, 'p_adj')}" if self.p is not None else "p=n/a"
        processes = "processes={}/{}, ".format(*self.processes) if self.processes else ""
        n, m = self.rounds
        host = ""
        if self.raw_change is not None and self.host_change is not None:
            host = (
                f" with the host's speed taken out (raw {self.raw_change:+.1%}, host reference {self.host_change:+.1%})"
            )
        return (
            f"{self.id}: median {seconds(self.median)} vs {self.reference} {seconds(self.baseline_median)} "
            f"({self.change:+.1%}{host}, {test}, {processes}n={n}/{m}) on {self.hardware_key}"
        )

    @property
    def label(self) -> str:
        return {FAIL: "FAIL", MISSING: "MISSING", ERRORED: "ERROR"}.get(self.status, self.status)

    def lines(self) -> list[str]:
        text = f"{self.label:<12}  {self.message}" + (f": {self.reason}" if self.reason else "")
        if self.confirmed:
            text += f" [confirmed: {self.confirmed}]"
        figures = [f"{m.label:<12}  {self.id}: {m.describe(self.reference)}" for m in self.metrics]
        return [text, *figures] + [f"{'':<12}  warning: {w}" for w in self.warnings]

    @property
    def unjudgeable(self) -> bool:
        """No test could judge this row: with this many processes a side the exact test never reaches alpha."""
        return self.processes is not None and not reaches_alpha(*self.processes, self.rule.alpha)

    def _unjudgeable_reason(self) -> str:
        assert self.processes is not None
        k, m = self.processes
        if min(k, m) < MIN_SIDE:
            return (
                f"one process cannot be judged: with {k}/{m} processes (new/baseline) a side's drift cannot be told "
                f"from a change, and the test on the processes' medians needs {MIN_SIDE} a side"
            )
        return (
            f"{k}/{m} processes (new/baseline) cannot be judged: the exact test on their medians gives p = "
            f"{min_p_value(k, m):.3g} at the least, not below alpha {self.rule.alpha:g}; run more processes"
        )

    def decide(self) -> None:
        """The status, from the change, the adjusted p-value and the problems (once p_adjusted is set)."""
        rule = self.rule
        significant = self.p_adjusted is not None and self.p_adjusted < rule.alpha
        assert self.change is not None
        self.status, self.reason = PASS, ""
        problems = ([self._unjudgeable_reason()] if self.unjudgeable else []) + self.problems
        if problems:
            self.status, self.reason = INCONCLUSIVE, "; ".join(problems)
        elif self.change > rule.threshold:
            if significant:
                self.status = FAIL
            else:
                self.status = INCONCLUSIVE
                self.reason = (
                    f"slower than the {rule.threshold:.0%} threshold but not significant (alpha {rule.alpha:g})"
                )
        elif self.change < -rule.threshold and significant:
            self.status = IMPROVED

    def to_json(self) -> dict[str, Any]:
        skipped = ("rule", "problems", "metrics")
        value = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skipped}
        value["metrics"] = [m.to_json() for m in self.metrics]
        value["message"] = self.message
        value["label"] = self.label
        value["failing"] = self.failing
        return value


def _noise(measured: Sequence[Result], result: Result, baseline: Entry, rule: Rule) -> list[str]:
    """Why this pair of measurements cannot be judged, if it cannot. The spread limit reads each process's own
    rounds (the median of their IQRs over medians): the drift between processes is the test's to weigh, and the
    pooled rounds' IQR would hold it too."""
    problems = []
    n, m = len(result.data), len(baseline.data)
    if not n or not m:
        problems.append("no raw round times " + ("in the results" if not n else "in the baseline"))
    if result.throttled:
        problems.append("the GPU throttled during the run")
    if baseline.throttled:
        problems.append("the GPU throttled during the baseline run")
    limit = f"(limit {rule.max_spread:.0%})"
    noise = statistics.median(each.spread for each in measured)
    if noise > rule.max_spread:
        problems.append(f"noisy: IQR is {noise:.0%} of the median{_per_process(len(measured))} {limit}")
    if baseline.round_noise > rule.max_spread:
        per_process = _per_process(len(baseline.process_spreads))
        problems.append(f"noisy baseline: IQR is {baseline.round_noise:.0%} of its median{per_process} {limit}")
    return problems


def _per_process(processes: int) -> str:
    return f" in a process (the median of {processes})" if processes > 1 else ""


def _differences(result: Result, baseline: Entry, versions: dict[str, str | None]) -> list[str]:
    notes = []
    keys = [key for key in baselines.SOFTWARE_KEYS if key != "zipvoice" or result.facts.zipvoice]
    changed = [
        f"{key} {versions.get(key)} (baseline {baseline.versions.get(key)})"
        for key in keys
        if versions.get(key) != baseline.versions.get(key)
    ]
    if changed:
        notes.append("software differs from the baseline: " + ", ".join(changed))
    weights = result.facts.weights
    if weights != baseline.weights:
        notes.append(f"weights differ from the baseline: {weights} (baseline {baseline.weights})")
    slowdown = result.facts.injected_slowdown
    if slowdown:
        notes.append(f"measured with an injected slowdown of {slowdown:.0%} (--zv-inject-slowdown): not a real change")
    return notes


def host_references(
    measured: Sequence[Result], baseline: Entry, versions: dict[str, str | None]
) -> tuple[list[float], list[float]] | str:
    """Each side's host reference medians, process for process, or why the two sides' cannot be set side by side
    ("" where neither side timed one: a GPU row, or a run of another matrix)."""
    references = [each.host_reference for each in measured]
    if all(r is None for r in references) and not baseline.process_references:
        return ""
    if None in references or not baseline.process_references:
        missing = "the baseline's processes" if baseline.process_references == [] else "a process of the run"
        return f"{missing} timed no host reference (stored before zvperf timed one?)"
    workloads = {workload for workload, _ in filter(None, references)}
    if workloads != {baseline.reference_workload}:
        return f"the host references differ ({', '.join(sorted(workloads))} vs {baseline.reference_workload})"
    if versions.get("torch") != baseline.versions.get("torch"):
        return "torch differs from the baseline's, and the host reference is torch's own code"
    return [seconds for _, seconds in filter(None, references)], baseline.process_references


def judge(
    measured: Sequence[Result], baseline: Entry, rule: Rule, hardware_key: str, versions: dict[str, str | None]
) -> Verdict:
    """One benchmark's measurements in one or more processes of one commit against its baseline: their rounds
    pooled, their medians tested; the status is decided once the run's p-values are adjusted together
    (``decide_all``).

    Under ``rule.host_adjusted``, where both sides timed the same host reference beside their rounds (a CPU's gated
    rows), each process's median is divided by its reference's and scaled by the baseline's median reference: the
    host's speed at the time, which moves every row timed then alike (docs/calibration.md), is taken out, and the
    change and the test read the adjusted medians. A code change does not move the reference (torch's matrix
    products; never adjusted across torch versions)."""
    result = pooled_result(measured)
    change = result.median / baseline.median - 1 if baseline.median else math.inf
    new, old = [each.median for each in measured], baseline.processes
    problems = _noise(measured, result, baseline, rule)
    warnings = _differences(result, baseline, versions)
    raw_change = host_change = None
    host = host_references(measured, baseline, versions) if rule.host_adjusted else ""
    if isinstance(host, str):
        warnings += [f"not adjusted for the host's speed: {host}"] if host else []
    elif old is not None and baseline.median:
        scale = statistics.median(host[1])
        new = [median * scale / reference for median, reference in zip(new, host[0], strict=True)]
        old = [median * scale / reference for median, reference in zip(old, host[1], strict=True)]
        raw_change, change = change, statistics.median(new) / statistics.median(old) - 1
        host_change = statistics.median(host[0]) / scale - 1
    if old is None:
        problems.append(
            f"the baseline pooled {baseline.runs} runs and, stored before zvperf kept each run's median, cannot be "
            "tested against: update it"
        )
    test = process_test(new, old, slower=change >= 0) if result.data and baseline.data and old else None
    figures = metrics.per_run(measured)
    checks = [
        judge_figure(
            metric, threshold, figures.get(metric.key, []), baseline.per_run.get(metric.key, []), result, baseline
        )
        for metric in metrics.METRICS
        if (threshold := getattr(rule, metric.setting)) is not None and metric.applies(result.kind)
    ]
    return Verdict(
        result.id,
        INCONCLUSIVE,
        hardware_key,
        warnings=warnings,
        median=result.median,
        baseline_median=baseline.median,
        change=change,
        raw_change=raw_change,
        host_change=host_change,
        p=test.p if test else None,
        method=test.method if test else None,
        rounds=(len(result.data), len(baseline.data)),
        processes=(len(new), len(old)) if result.data and baseline.data and old else None,
        gpu=gpu_state(result),
        problems=problems,
        rule=rule,
        metrics=checks,
    )


def decide_all(verdicts: list[Verdict]) -> None:
    """Adjust the p-values of every tested verdict together (Benjamini-Hochberg), then decide each."""
    tested = [v for v in verdicts if v.p is not None]
    adjusted = benjamini_hochberg([v.p for v in tested if v.p is not None])
    for verdict, p_adjusted in zip(tested, adjusted, strict=True):
        verdict.p_adjusted = p_adjusted
    for verdict in verdicts:
        if verdict.change is not None:
            verdict.decide()


@dataclasses.dataclass
class GateReport:
    hardware_key: str
    path: Path  # the baseline file compared against
    config: GateConfig
    verdicts: list[Verdict]
    warnings: list[str]  # about the whole run: no baseline file for this hardware, other CPU flags
    problems: list[str] = dataclasses.field(default_factory=list)  # what fails the whole run (--require-baseline)
    confirmation: str = ""  # how the failed and inconclusive verdicts were confirmed A/B, when they were
    # --require-baseline with a baseline file: a judgement is required, and every row must be judgeable. Checked on
    # the verdicts as they are (a confirmation can judge rows the stored baseline could not).
    require_judgement: bool = False

    @property
    def unmet(self) -> list[str]:
        """What fails the whole run: its problems, and what --require-baseline asks for and the verdicts lack."""
        found = list(self.problems)
        if self.require_judgement and not self.judged:
            found.append("nothing was judged, and --require-baseline asks for a judgement")
        not_run = self.count(NOT_RUN)
        if self.require_judgement and not_run:
            found.append(
                f"{not_run} configurations of the baseline were not in this run, and --require-baseline asks for "
                "every one"
            )
        unjudgeable = self.unjudgeable
        if self.require_judgement and unjudgeable:
            found.append(
                f"{unjudgeable} of {len(self.verdicts)} configurations cannot be judged (too few processes a side for "
                "the exact test to reach alpha: pool more runs), and --require-baseline asks for a judgement"
            )
        return found

    @property
    def unjudgeable(self) -> int:
        return sum(v.status == INCONCLUSIVE and v.unjudgeable for v in self.verdicts)

    @property
    def failed(self) -> bool:
        return bool(self.unmet) or any(v.failing for v in self.verdicts)

    def count(self, status: str) -> int:
        return sum(v.status == status for v in self.verdicts)

    @property
    def judged(self) -> int:
        return sum(self.count(status) for status in JUDGED)

    def header(self) -> str:
        rule = self.config.defaults
        settings = f"settings from {self.config.source}" if self.config.source else "default settings"
        figures = [
            f"{metric.name} is more than "
            + (f"{threshold:.0%}" if (threshold := getattr(rule, metric.setting)) else "its per-benchmark threshold")
            + " above the baseline's median"
            for metric in metrics.METRICS
            if self.config.judges(metric)
        ]
        figures_rule = f", when {' or '.join(figures)} (one figure per run: no test)" if figures else ""
        host = " (over the host reference each timed beside them, where both sides did)" if rule.host_adjusted else ""
        return (
            f"zvperf gate on {self.hardware_key} against {self.path} - fails when a median is over "
            f"{rule.threshold:.0%} slower and a one-sided exact Mann-Whitney U test on the processes' medians{host} "
            f"gives p < {rule.alpha:g} after the Benjamini-Hochberg adjustment{figures_rule}, and when a "
            f"configuration is missing or errored ({settings})"
        )

    def figure_counts(self) -> str:
        """``; peak memory: 1 over the threshold, 2 within`` for each figure judged, or nothing."""
        parts = []
        for metric in metrics.METRICS:
            counts = Counter(m.status for v in self.verdicts for m in v.metrics if m.metric == metric)
            if counts:
                said = ", ".join(f"{counts[s]} {_METRIC_COUNTED_AS[s]}" for s in METRIC_STATUSES if counts[s])
                parts.append(f"; {metric.name}: {said}")
        return "".join(parts)

    def summary(self) -> str:
        """The last line: the outcome, and how many configurations were judged."""
        total = len(self.verdicts)
        unjudged = total - self.judged - self.count(ABSENT)
        cannot = f" ({self.unjudgeable} with too few processes a side)" if self.unjudgeable else ""
        if self.failed:
            unmet = self.unmet
            outcome = "FAILED" + (f" ({'; '.join(unmet)})" if unmet else "")
        elif unjudged:
            outcome = f"found no slowdown, but could not judge {unjudged} of {total}{cannot}"
        else:
            outcome = "passed"
        decided = ", ".join(f"{self.count(s)} {_COUNTED_AS[s]}" for s in JUDGED)
        others = ", ".join(f"{self.count(s)} {_COUNTED_AS[s]}" for s in STATUSES if s not in JUDGED and self.count(s))
        return (
            f"gate {outcome}: judged {self.judged} of {total} configurations ({decided})"
            + (f"; not judged: {others}" if others else "")
            + self.figure_counts()
        )

    def lines(self) -> list[str]:
        lines = [self.header()]
        if self.confirmation:
            lines.append(f"confirmation: {self.confirmation}")
        lines += [f"warning: {w}" for w in self.warnings]
        for verdict in self.verdicts:
            lines += verdict.lines()
        lines.append(self.summary())
        return lines


def _unmeasured_verdict(
    name: str, why: Unmeasured | None, entry: Entry | None, key: str, config: GateConfig
) -> Verdict:
    said = f"{why.outcome}: {why.reason}" if why else "no result, and the run recorded no reason (not in its matrix?)"
    if why is not None and why.broken:
        return Verdict(name, ERRORED, key, said)
    if entry is None:
        return Verdict(name, SKIPPED, key, said)
    absence = config.absence(key, name)
    if absence is not None:
        return Verdict(name, ABSENT, key, f"expected on {absence.hardware} ({absence.reason}); the run said {said}")
    if why is None or why.outcome == DESELECTED:
        not_asked = why.reason if why else "outside its matrix (no result, no skip, no error recorded)"
        return Verdict(name, NOT_RUN, key, f"in the baseline, not asked for by this run: {not_asked}")
    return Verdict(name, MISSING, key, f"in the baseline but not measured: {said}")


def cpu_flag_difference(results: ResultsFile, machine: dict[str, Any]) -> str | None:
    """A warning when the run's CPU flags differ from those the baseline recorded under the same key."""
    now, then = results.zvperf_machine.get("cpu_flags"), machine.get("cpu_flags")
    if not now or not then or set(now) == set(then):
        return None
    added, lost = sorted(set(now) - set(then)), sorted(set(then) - set(now))
    change = ", ".join([*(f"+{f}" for f in added), *(f"-{f}" for f in lost)])
    return f"this CPU's flags differ from the baseline machine's ({change}): same key, other hardware?"


def pooled_result(results: Sequence[Result]) -> Result:
    """One result with the rounds of several processes (pytest-benchmark's statistics over all of them); the
    facts of a throttled one if any, so that throttling still makes the verdict inconclusive. One process is
    itself."""
    if len(results) == 1:
        return results[0]
    stats = Stats()
    for result in results:
        for duration in result.data:
            stats.update(duration)
    facts_from = next((r for r in results if r.throttled), results[0])
    numbers = {"median": stats.median, "iqr": stats.iqr, "rounds": stats.rounds}
    return dataclasses.replace(facts_from, stats=numbers, data=list(stats.data))


def compare(
    runs: ResultsFile | Sequence[ResultsFile], directory: Path, config: GateConfig, require_baseline: bool = False
) -> GateReport:
    """Judge every result of ``runs`` (separate processes of one commit, their rounds pooled and their medians
    tested) against the baseline file of their hardware key in ``directory``, and every baseline entry without a
    result as missing (or absent as gate.toml expects)."""
    runs = [runs] if isinstance(runs, ResultsFile) else list(runs)
    baselines.same_stack(runs, "one side of a comparison")
    results = runs[0]
    key = results.hardware_key
    path = baselines.baseline_path(directory, key)
    baseline = baselines.read(path)
    entries = baseline.entries if baseline else {}
    warnings, problems = [], []
    if baseline is None:
        others = [k for k in baselines.hardware_keys(directory) if k != key]
        elsewhere = f"baselines exist only for {', '.join(others)}" if others else f"{directory} holds no baselines"
        warnings.append(f"no baseline file for this hardware ({key}): {elsewhere}; nothing was judged")
        if require_baseline:
            problems.append(f"no baseline file {path}, required by --require-baseline")
    else:
        flags = cpu_flag_difference(results, baseline.machine)
        warnings += [flags] if flags else []
    versions = baselines.run_versions(results)
    processes: dict[str, list[Result]] = {}
    for run in runs:
        for each in run.results:
            processes.setdefault(each.id, []).append(each)
    verdicts = []
    for name, measured in processes.items():
        entry = entries.get(name)
        if entry is None:
            result = pooled_result(measured)
            reason = "no baseline (zvperf baseline update adds one)"
            # With its rule: an A/B confirmation may still judge it (two ZipVoice checkouts, zvperf confirm).
            rule = config.rule(name, key)
            verdicts.append(
                Verdict(name, NO_BASELINE, key, reason, median=result.median, gpu=gpu_state(result), rule=rule)
            )
        else:
            verdicts.append(judge(measured, entry, config.rule(name, key), key, versions))
    unmeasured = {name: why for run in reversed(runs) for name, why in run.unmeasured.items()}  # the first run's
    for name in [*unmeasured, *sorted(set(entries) - set(unmeasured))]:
        why = unmeasured.get(name)
        if name in processes or (why is not None and why.outcome == DESELECTED and name not in entries):
            continue  # judged above, or left out on purpose with nothing to compare
        verdicts.append(_unmeasured_verdict(name, why, entries.get(name), key, config))
    decide_all(verdicts)
    return GateReport(
        key, path, config, verdicts, warnings, problems, require_judgement=require_baseline and baseline is not None
    )


def ignored_head_changes(head: Path | None, base: Path) -> list[str]:
    """A warning naming the baseline files and gate config that the judged change adds, removes or edits
    (``head`` is its baselines folder, ``base`` the base commit's, which the gate reads): a change cannot loosen
    its own gate, and the report says that its edits were not used."""
    if head is None or head.resolve() == base.resolve():
        return []

    def files(directory: Path) -> dict[str, bytes]:
        found = list(directory.glob("*.json")) if directory.is_dir() else []
        return {p.name: p.read_bytes() for p in [*found, directory / CONFIG_NAME] if p.is_file()}

    mine, theirs = files(head), files(base)
    changed = sorted(name for name in set(mine) | set(theirs) if mine.get(name) != theirs.get(name))
    if not changed:
        return []
    return [
        f"this change edits {', '.join(str(head / name) for name in changed)}: ignored, the gate judges against the "
        f"base commit's copies in {base} (a change cannot move its own goalposts; they apply once merged)"
    ]
