"""The gate's statistics: a one-sided Mann-Whitney U test on raw round times, exact wherever that is affordable,
and the Benjamini-Hochberg adjustment over all the tests of one run.

scipy's ``mannwhitneyu`` chooses its normal approximation by default once both samples exceed 8 rounds, so
the method is chosen here, and each verdict names the one it used:

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
from collections.abc import Sequence

EXACT_MAX_PAIRS = 150 * 150
ALL_SPLITS_MAX = 200_000
RANDOM_SPLITS = 9_999
EXACT, PERMUTATION_EXACT, PERMUTATION_RANDOM, NORMAL = "exact", "permutation-exact", "permutation-9999", "normal"


@dataclasses.dataclass(frozen=True)
class RankTest:
    p: float  # one-sided p-value
    method: str  # EXACT, PERMUTATION_EXACT, PERMUTATION_RANDOM or NORMAL


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
