"""The regression gate: judge each result against its baseline on the same hardware key.

A benchmark **fails** when its median is slower than the baseline's by more than the threshold
(default 10%) *and* a one-sided Mann-Whitney U test on the raw round times says the new rounds are
larger (p < alpha, default 0.01). Mann-Whitney U, as asv uses, because it compares ranks: it assumes
no normal distribution (round times are skewed, with a long right tail), one outlier round cannot
swing it, and it works on exactly the raw rounds pytest-benchmark keeps. Not a bootstrap interval on
the ratio of medians: with the 5 to 10 rounds a benchmark has, a resampled median takes only a handful
of distinct values and the interval is coarse and optimistic, while the exact U test gives exact
p-values at any size. The threshold keeps a significant but negligible drift from failing; the test
keeps a noisy median from failing.

With n and m rounds the smallest p the exact test can reach is 1 / C(n+m, n) (5 vs 5: 1/252 = 0.004;
4 vs 4: 1/70 = 0.014), so with alpha = 0.01 each side needs 5 rounds; with fewer the verdict is
*inconclusive*, never a pass. Inconclusive too: a result or baseline whose IQR is above
``max_spread`` of its median, a throttled GPU, and a slowdown beyond the threshold that is not
significant (it may be real: run again with more rounds). A missing baseline, another hardware key,
different software versions or weights, and an injected slowdown are said with every verdict.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from zvperf.gate import baselines
from zvperf.gate.baselines import Entry
from zvperf.gate.config import GateConfig, Rule
from zvperf.results.schema import Result, ResultsFile

FAIL, IMPROVED, PASS, INCONCLUSIVE, NO_BASELINE = "fail", "improved", "pass", "inconclusive", "no baseline"


def seconds(value: float) -> str:
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.1f} ms"
    return f"{value * 1e6:.0f} us"


def min_p_value(n: int, m: int) -> float:
    """The smallest one-sided p the exact Mann-Whitney U test can give with n and m rounds (no ties)."""
    return 1 / math.comb(n + m, n)


def p_value(new: list[float], old: list[float], slower: bool) -> float:
    """One-sided Mann-Whitney U: are the new rounds larger (``slower``) or smaller than the baseline's?"""
    from scipy.stats import mannwhitneyu  # imported here: scipy.stats costs seconds at every pytest start

    return float(mannwhitneyu(new, old, alternative="greater" if slower else "less").pvalue)


@dataclasses.dataclass
class Verdict:
    id: str
    status: str
    message: str  # "<id>: median 3.61 s vs baseline 3.02 s (+19.5%, p=0.002, n=7/7) on cpu-xeon-2c"
    reason: str = ""  # why it is inconclusive, or has no baseline
    warnings: list[str] = dataclasses.field(default_factory=list)
    change: float | None = None  # new median / baseline median - 1
    p: float | None = None

    def lines(self) -> list[str]:
        label = "FAIL" if self.status == FAIL else self.status
        text = f"{label:<12}  {self.message}" + (f": {self.reason}" if self.reason else "")
        return [text] + [f"{'':<12}  warning: {w}" for w in self.warnings]


def _noise(result: Result, baseline: Entry, rule: Rule) -> list[str]:
    """Why this pair of measurements cannot be judged, if it cannot."""
    problems = []
    n, m = len(result.data), len(baseline.data)
    if not n or not m:
        problems.append("no raw round times " + ("in the results" if not n else "in the baseline"))
    elif min_p_value(n, m) >= rule.alpha:
        problems.append(f"too few rounds (n={n}/{m}) for p < {rule.alpha:g}")
    if result.throttled:
        problems.append("the GPU throttled during the run")
    if any(f.startswith("throttled") for f in baseline.flags):
        problems.append("the GPU throttled during the baseline run")
    if result.spread > rule.max_spread:
        problems.append(f"noisy: IQR is {result.spread:.0%} of the median (limit {rule.max_spread:.0%})")
    if baseline.spread > rule.max_spread:
        problems.append(f"noisy baseline: IQR is {baseline.spread:.0%} of its median (limit {rule.max_spread:.0%})")
    return problems


def _differences(result: Result, baseline: Entry, versions: dict[str, str | None]) -> list[str]:
    notes = []
    changed = [
        f"{key} {versions.get(key)} (baseline {baseline.versions.get(key)})"
        for key in baselines.SOFTWARE_KEYS
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


def judge(result: Result, baseline: Entry, rule: Rule, hardware_key: str, versions: dict[str, str | None]) -> Verdict:
    """One benchmark's verdict against its baseline."""
    change = result.median / baseline.median - 1 if baseline.median else math.inf
    new, old = result.data, baseline.data
    p = p_value(new, old, slower=change >= 0) if new and old else None
    p_text = "p=n/a" if p is None else "p<0.001" if p < 0.001 else f"p={p:.3f}"
    message = (
        f"{result.id}: median {seconds(result.median)} vs baseline {seconds(baseline.median)} "
        f"({change:+.1%}, {p_text}, n={len(new)}/{len(old)}) on {hardware_key}"
    )
    verdict = Verdict(result.id, PASS, message, change=change, p=p, warnings=_differences(result, baseline, versions))
    problems = _noise(result, baseline, rule)
    significant = p is not None and p < rule.alpha
    if problems:
        verdict.status, verdict.reason = INCONCLUSIVE, "; ".join(problems)
    elif change > rule.threshold:
        if significant:
            verdict.status = FAIL
        else:
            verdict.status = INCONCLUSIVE
            verdict.reason = (
                f"slower than the {rule.threshold:.0%} threshold but not significant (alpha {rule.alpha:g})"
            )
    elif change < -rule.threshold and significant:
        verdict.status = IMPROVED
    return verdict


@dataclasses.dataclass
class GateReport:
    hardware_key: str
    path: Path  # the baseline file compared against
    config: GateConfig
    verdicts: list[Verdict]
    warnings: list[str]  # about the whole run: no baseline file for this hardware

    @property
    def failed(self) -> bool:
        return any(v.status == FAIL for v in self.verdicts)

    def count(self, status: str) -> int:
        return sum(v.status == status for v in self.verdicts)

    def lines(self) -> list[str]:
        rule = self.config.defaults
        settings = f"settings from {self.config.source}" if self.config.source else "default settings"
        lines = [
            f"zvperf gate on {self.hardware_key} against {self.path} - fails when a "
            f"median is over {rule.threshold:.0%} slower and a one-sided Mann-Whitney U test on the raw rounds gives "
            f"p < {rule.alpha:g} ({settings})"
        ]
        lines += [f"warning: {w}" for w in self.warnings]
        for verdict in self.verdicts:
            lines += verdict.lines()
        unjudged = self.count(INCONCLUSIVE) + self.count(NO_BASELINE)
        if self.failed:
            outcome = "FAILED"
        elif unjudged:
            outcome = f"found no slowdown, but could not judge {unjudged} of {len(self.verdicts)}"
        else:
            outcome = "passed"
        lines.append(
            f"gate {outcome}: {self.count(FAIL)} slower, {self.count(IMPROVED)} improved, {self.count(PASS)} passed, "
            f"{self.count(INCONCLUSIVE)} inconclusive, {self.count(NO_BASELINE)} without a baseline"
        )
        return lines


def compare(results: ResultsFile, directory: Path, config: GateConfig) -> GateReport:
    """Judge every result against the baseline file of its hardware key in ``directory``."""
    key = results.hardware_key
    path = baselines.baseline_path(directory, key)
    baseline = baselines.read(path)
    entries = baseline.entries if baseline else {}
    warnings = []
    if baseline is None:
        others = [k for k in baselines.hardware_keys(directory) if k != key]
        elsewhere = f"baselines exist only for {', '.join(others)}" if others else f"{directory} holds no baselines"
        warnings.append(f"no baseline file for this hardware ({key}): {elsewhere}; nothing was judged")
    versions = baselines.run_versions(results)
    verdicts = []
    for result in results.results:
        entry = entries.get(result.id)
        if entry is None:
            message = f"{result.id}: median {seconds(result.median)} on {key}"
            verdicts.append(Verdict(result.id, NO_BASELINE, message, "no baseline (zvperf baseline update adds one)"))
        else:
            verdicts.append(judge(result, entry, config.rule(result.id), key, versions))
    return GateReport(key, path, config, verdicts, warnings)
