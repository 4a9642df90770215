"""The gate's statistics: its test on the medians of separate processes, the Mann-Whitney U test on rounds, and
the Benjamini-Hochberg adjustment over all the tests of one run.

The gate tests processes, not rounds: a process's rounds share its state (what ran before it, its memory layout,
clocks, the machine's load while it ran), so processes of unchanged code differ by more than their rounds do, and
a test on pooled rounds reads that drift as a change. ``process_test`` is a one-sided Welch's t-test on the
logarithms of each side's process medians (the summary-measure analysis of a nested design: the process is the
unit, times compare as ratios), which needs two processes a side and no equal spread of the two sides. The
calibration chose it (docs/calibration.md, *Process-level noise*): on pooled rounds 13 of 21 and 5 of 14 runs
of unchanged code failed; on the processes' medians none did, and of the tests on medians the exact
Mann-Whitney U cannot reach a Benjamini-Hochberg adjusted p below 0.01 for one slower row among the gate matrix's
(its smallest p, 1 / C(k+m, k), is 0.006 for 3 against 8 processes, adjusted over 16 rows 0.1), where Welch's t
can.

``mann_whitney``, the one-sided Mann-Whitney U test on rounds, was the gate's test before;
scripts/process_noise.py calibrates the choice with it. scipy's ``mannwhitneyu`` chooses its normal
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
WELCH = "welch"
MIN_SIDE = 2  # processes a side: one process's drift cannot be told from a change


@dataclasses.dataclass(frozen=True)
class RankTest:
    p: float  # one-sided p-value
    method: str  # EXACT, PERMUTATION_EXACT, PERMUTATION_RANDOM or NORMAL


def process_test(new: Sequence[float], old: Sequence[float], slower: bool) -> RankTest | None:
    """One-sided Welch's t-test on the logarithms of the processes' medians: are the new ones larger (``slower``) or
    smaller? None with fewer than ``MIN_SIDE`` processes on a side."""
    if min(len(new), len(old)) < MIN_SIDE:
        return None
    from scipy.stats import ttest_ind

    a, b = [math.log(x) for x in new], [math.log(x) for x in old]
    if len(set(a)) == len(set(b)) == 1:  # no spread on either side: the means alone decide
        differs = a[0] > b[0] if slower else a[0] < b[0]
        return RankTest(0.0 if differs else 1.0, WELCH)
    return RankTest(float(ttest_ind(a, b, equal_var=False, alternative="greater" if slower else "less").pvalue), WELCH)


def min_p_value(n: int, m: int) -> float:
    """The smallest one-sided p the exact Mann-Whitney U test can give with n and m rounds (no ties)."""
    return 1 / math.comb(n + m, n)


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
