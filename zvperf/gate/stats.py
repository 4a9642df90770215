"""The gate's statistics: its test on the medians of separate processes, the Mann-Whitney U test on rounds, and
the Benjamini-Hochberg adjustment over all the tests of one run.

The gate tests processes, not rounds: a process's rounds share its state (what ran before it, its memory layout,
clocks, the machine's load while it ran), so processes of unchanged code differ by more than their rounds do, and
a test on pooled rounds reads that drift as a change. ``process_test`` is the one-sided exact Mann-Whitney U test on
each side's process medians (the summary-measure analysis of a nested design: the process is the unit). The
calibration chose it (docs/calibration.md, *Process-level noise*): on pooled rounds a third to two thirds of the
runs of unchanged code failed; on process medians the exact U failed none in every setting measured, where
Student's and Welch's t failed some, and it alone detected a 25% slowdown of every row at three processes against
eight. It assumes nothing of how processes spread, and its floor is honest: with k and m processes its smallest p
is 1 / C(k+m, k) (``min_p_value``), so a side too small to ever reach alpha is said to be unjudgeable
(``reaches_alpha``) rather than read as a pass.

``mann_whitney`` is the one-sided Mann-Whitney U test on either (rounds were the gate's unit before;
scripts/process_noise.py calibrates the choice with them). scipy's ``mannwhitneyu`` chooses its normal
approximation by default once both samples exceed 8 rounds, so the method is chosen here, and names it:

* ``exact``: no tied round times and at most ``EXACT_MAX_PAIRS`` pairs (150 x 150 rounds: about 50 ms;
  200 x 200 already takes 0.4 s). The exact distribution of U assumes no ties.
* ``permutation-exact``: tied round times (rounded or quantised data) and at most ``ALL_SPLITS_MAX`` ways to
  split the pooled rounds: every split enumerated, exact given the ties.
* ``permutation-9999``: tied and larger: 9,999 random splits (seeded, so a verdict is reproducible).
* ``normal``: no ties and too many pairs for the exact distribution, where the normal approximation agrees
  with it to about 1e-3.

With dozens of benchmarks each tested at alpha, some would fail by chance alone; the gate therefore decides
on p-values adjusted by Benjamini and Hochberg over every test of the run (``scipy.stats.
false_discovery_control``), which keeps the expected share of false failures among all failures at alpha.
It is valid for independent tests and positively dependent ones (a machine's drift moves every benchmark the
same way), which is what a run's benchmarks are.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence

EXACT_MAX_PAIRS = 150 * 150
ALL_SPLITS_MAX = 200_000
RANDOM_SPLITS = 9_999
EXACT, PERMUTATION_EXACT, PERMUTATION_RANDOM, NORMAL = "exact", "permutation-exact", "permutation-9999", "normal"
MIN_SIDE = 2  # processes a side: one process's drift cannot be told from a change
# The processes a gated run judges and its baseline pools (the gate matrix's, zvperf.suite.matrix.GATE_PRESETS):
# three against eight reach p = 1/165 at the least; a baseline must be judgeable against three.
JUDGED_PROCESSES, BASELINE_PROCESSES = 3, 8


@dataclasses.dataclass(frozen=True)
class RankTest:
    p: float  # one-sided p-value
    method: str  # EXACT, PERMUTATION_EXACT, PERMUTATION_RANDOM or NORMAL


def process_test(new: Sequence[float], old: Sequence[float], slower: bool) -> RankTest | None:
    """One-sided exact Mann-Whitney U on the processes' medians: are the new ones larger (``slower``) or smaller?
    None with fewer than ``MIN_SIDE`` processes on a side."""
    if min(len(new), len(old)) < MIN_SIDE:
        return None
    return mann_whitney(new, old, slower)


def min_p_value(n: int, m: int) -> float:
    """The smallest one-sided p the exact Mann-Whitney U test can give with n and m rounds (no ties)."""
    return 1 / math.comb(n + m, n)


def reaches_alpha(n: int, m: int, alpha: float) -> bool:
    """Whether the exact test with n and m processes can give a p below alpha at all."""
    return min_p_value(n, m) < alpha


def processes_needed(judged: int, alpha: float) -> int:
    """The fewest baseline processes against which ``judged`` processes can reach alpha."""
    m = 1
    while not reaches_alpha(judged, m, alpha):
        m += 1
    return m


def mann_whitney(new: Sequence[float], old: Sequence[float], slower: bool) -> RankTest:
    """One-sided Mann-Whitney U: are the new rounds larger (``slower``) or smaller than the old ones?"""
    # scipy.stats is imported here: it costs seconds at every pytest start.
    from scipy.stats import PermutationMethod, mannwhitneyu

    ties = len(set(new) | set(old)) < len(new) + len(old)
    method: str | PermutationMethod
    if not ties and len(new) * len(old) <= EXACT_MAX_PAIRS:
        label = method = EXACT
    elif ties and math.comb(len(new) + len(old), len(new)) <= ALL_SPLITS_MAX:
        label, method = PERMUTATION_EXACT, PermutationMethod(n_resamples=math.inf)
    elif ties:
        label, method = PERMUTATION_RANDOM, PermutationMethod(n_resamples=RANDOM_SPLITS, rng=0)
    else:
        label, method = NORMAL, "asymptotic"
    alternative = "greater" if slower else "less"
    return RankTest(float(mannwhitneyu(new, old, alternative=alternative, method=method).pvalue), label)


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """The Benjamini-Hochberg adjusted p-values, in the order given."""
    if not p_values:
        return []
    from scipy.stats import false_discovery_control

    return [float(p) for p in false_discovery_control(list(p_values), method="bh")]


def median_spread(data: Sequence[float]) -> float:
    """The half-width of the median's distribution-free 95% confidence interval (between order statistics, from the
    binomial distribution: ``scipy.stats.quantile_test``), over the median; infinite below 6 rounds, which give no
    such interval."""
    from scipy.stats import quantile_test

    if len(data) < 2:
        return math.inf
    interval = quantile_test(list(data), p=0.5).confidence_interval(0.95)
    if not (math.isfinite(interval.low) and math.isfinite(interval.high)):
        return math.inf
    return (interval.high - interval.low) / 2 / statistics.median(data)
