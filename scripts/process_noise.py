"""Which test tells a change from process-to-process noise: the gate's candidate tests judged on the same real
processes (docs/calibration.md, *Process-level noise*).

    python scripts/process_noise.py DIR [--threshold 0.10] [--alpha 0.01] [--max-spread 0.10] [--rows]

DIR holds results files named ``pNN-SIZE.json``: separate benchmark processes of one commit, numbered in the order
they ran, SIZE the slowdown injected into every timed call (0, 0.1, 0.25; docs/calibration.md has the loop that
writes them). Each judgement follows the gate's rule: a change over the threshold that is significant after the
Benjamini-Hochberg adjustment over all the run's rows, neither side's pooled rounds spread beyond max_spread, and a
test able to reach alpha. A baseline is made of the unchanged processes that ran just before the judged ones, as
a stored one would be; an A/B pairs head processes with the unchanged ones nearest them in time.

A run is a false alarm when any row fails without injection. Detection is counted twice: with every row of the
judged processes slower (what --zv-inject-slowdown does), and with one row slower at a time, the run's other rows
taken from the unchanged process that ran just before each injected one (a change that slows one row, the others
adjusting its p-value). Windows of consecutive processes overlap: the runs of one line are not independent.
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from scipy.stats import ttest_ind

from zvperf.gate.stats import benjamini_hochberg, mann_whitney, min_p_value
from zvperf.results.schema import load_results

Rows = dict[str, list[float]]  # row id -> the rounds of one process
Side = list[Rows]  # processes
# (judged processes' rounds, baseline processes' rounds, slower?) of one row -> (p, smallest reachable p)
Test = Callable[[list[list[float]], list[list[float]], bool], tuple[float, float]]


def pooled(processes: list[list[float]]) -> list[float]:
    return [t for rounds in processes for t in rounds]


def rounds_test(new: list[list[float]], old: list[list[float]], slower: bool) -> tuple[float, float]:
    """Mann-Whitney U on the pooled rounds: the gate before it tested processes."""
    a, b = pooled(new), pooled(old)
    return mann_whitney(a, b, slower).p, min_p_value(len(a), len(b))


def medians_test(new: list[list[float]], old: list[list[float]], slower: bool) -> tuple[float, float]:
    """Exact Mann-Whitney U on the processes' medians."""
    a, b = [statistics.median(p) for p in new], [statistics.median(p) for p in old]
    if min(len(a), len(b)) < 2:
        return 1.0, min_p_value(len(a), len(b))  # one a side: scipy cannot permute it, nor could it reach alpha
    return mann_whitney(a, b, slower).p, min_p_value(len(a), len(b))


def t_tests(equal_var: bool) -> Test:
    """Student's (``equal_var``) or Welch's t on the logarithms of the processes' medians."""

    def test(new: list[list[float]], old: list[list[float]], slower: bool) -> tuple[float, float]:
        a, b = [math.log(statistics.median(p)) for p in new], [math.log(statistics.median(p)) for p in old]
        if min(len(a), len(b)) < (1 if equal_var else 2) or len(a) + len(b) < 3:
            return 1.0, 1.0  # no variance to test against: it cannot judge
        p = float(ttest_ind(a, b, equal_var=equal_var, alternative="greater" if slower else "less").pvalue)
        return p, 0.0  # a parametric test has no smallest p

    return test


CANDIDATES: list[tuple[str, Test]] = [
    ("rounds (Mann-Whitney U)", rounds_test),
    ("process medians (exact Mann-Whitney U)", medians_test),
    ("process medians (Student's t on logs)", t_tests(equal_var=True)),
    ("process medians (Welch's t on logs)", t_tests(equal_var=False)),
]


def spread(data: Sequence[float]) -> float:
    q1, _, q3 = statistics.quantiles(data, n=4, method="inclusive")
    return (q3 - q1) / statistics.median(data)


Tested = tuple[float, float, float, bool]  # change, p, smallest reachable p, noisy


def tested(new: Side, old: Side, row: str, test: Test, args: argparse.Namespace) -> Tested:
    a, b = [p[row] for p in new], [p[row] for p in old]
    change = statistics.median(pooled(a)) / statistics.median(pooled(b)) - 1
    p, smallest = test(a, b, change >= 0)
    return change, p, smallest, max(spread(pooled(side)) for side in (a, b)) > args.max_spread


def decide(rows: dict[str, Tested], args: argparse.Namespace) -> dict[str, str]:
    """Each row's status (fail, improved, pass, inconclusive) as the gate decides it, adjusting over all rows."""
    names = sorted(rows)
    adjusted = benjamini_hochberg([rows[r][1] for r in names])
    reachable = benjamini_hochberg([rows[r][2] for r in names])
    status = {}
    for row, p_adj, best in zip(names, adjusted, reachable, strict=True):
        change, _, _, noisy = rows[row]
        if noisy or best >= args.alpha:
            status[row] = "inconclusive"
        elif abs(change) > args.threshold:
            status[row] = ("fail" if change > 0 else "improved") if p_adj < args.alpha else "inconclusive"
        else:
            status[row] = "pass"
    return status


def judge(new: Side, old: Side, test: Test, args: argparse.Namespace) -> dict[str, Tested]:
    return {row: tested(new, old, row, test, args) for row in sorted(set.intersection(*map(set, [*new, *old])))}


Runs = list[tuple[float, Rows]]  # (injected slowdown, rows) of each process, in the order they ran


def stored_plans(runs: Runs, judged: int, baseline: int) -> list[tuple[float, list[int], list[int]]]:
    """(size, judged process indices, baseline process indices): every window of ``judged`` consecutive processes of
    one size, against the ``baseline`` unchanged processes that ran last before its first."""
    plans = []
    for size in sorted({s for s, _ in runs}):
        positions = [i for i, (s, _) in enumerate(runs) if s == size]
        for start in range(len(positions) - judged + 1):
            window = positions[start : start + judged]
            before = [i for i in range(window[0]) if runs[i][0] == 0][-baseline:]
            if len(before) == baseline:
                plans.append((size, window, before))
    return plans


def ab_plans(runs: Runs, each: int) -> list[tuple[float, list[int], list[int]]]:
    """(size, head indices, base indices): ``each`` consecutive processes of one size against the ``each`` unchanged
    ones nearest them in time, as alternating A/B processes run."""
    plans = []
    for size in sorted({s for s, _ in runs}):
        positions = [i for i, (s, _) in enumerate(runs) if s == size]
        for start in range(0, len(positions) - each + 1, each if size == 0 else 1):
            head = positions[start : start + each]
            others = [i for i, (s, _) in enumerate(runs) if s == 0 and i not in head]
            plans.append((size, head, sorted(others, key=lambda i: min(abs(i - h) for h in head))[:each]))
    return plans


def one_row_slower(runs: Runs, head: list[int], row: str | None) -> Side:
    """The injected processes' ``row`` (None: none of it); their other rows from the unchanged process that ran
    last before each."""
    side = []
    for index in head:
        before = next(i for i in range(index - 1, -1, -1) if runs[i][0] == 0)
        side.append({**runs[before][1], **({row: runs[index][1][row]} if row else {})})
    return side


def report(runs: Runs, plans: list[tuple[float, list[int], list[int]]], args: argparse.Namespace) -> None:
    for name, test in CANDIDATES:
        parts = []
        for size in sorted({size for size, _, _ in plans}):
            chosen = [([runs[i][1] for i in new], [runs[i][1] for i in old], new) for s, new, old in plans if s == size]
            if size == 0:
                verdicts = [decide(judge(new, old, test, args), args) for new, old, _ in chosen]
                alarms = sum(any(s == "fail" for s in v.values()) for v in verdicts)
                unsure = Counter(s for v in verdicts for s in v.values())["inconclusive"]
                parts.append(f"false alarms {alarms}/{len(verdicts)} ({unsure}/{sum(map(len, verdicts))} inconclusive)")
                continue
            every = single = 0
            found: Counter[str] = Counter()
            for new, old, indices in chosen:
                slower = judge(new, old, test, args)
                every += sum(s == "fail" for s in decide(slower, args).values())
                unchanged = judge(one_row_slower(runs, indices, None), old, test, args)
                for row in slower:
                    found[row] += decide({**unchanged, row: slower[row]}, args)[row] == "fail"
            single = sum(found.values())
            total = len(found) * len(chosen)
            parts.append(f"{size:.0%} in every row {every}/{total}, in one row {single}/{total}")
            if args.rows:
                parts += [f"\n    {size:.0%} {row}: {count}/{len(chosen)}" for row, count in sorted(found.items())]
        print(f"  {name}: " + "; ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--threshold", type=float, default=0.10)
    parser.add_argument("--alpha", type=float, default=0.01)
    parser.add_argument("--max-spread", type=float, default=0.10)
    parser.add_argument("--rows", action="store_true", help="each row's detection when it alone is slower")
    args = parser.parse_args()
    runs: Runs = []
    for path in sorted(args.directory.glob("p*-*.json")):
        match = re.fullmatch(r"p\d+-(.+)", path.stem)
        if match:
            runs.append((float(match[1]), {r.id: r.data for r in load_results(path).results}))
    sizes = sorted(Counter(s for s, _ in runs).items())
    print(f"{len(runs)} processes: " + ", ".join(f"{n} at {s:.0%}" for s, n in sizes))
    print(
        f"gate: over {args.threshold:.0%} slower, Benjamini-Hochberg adjusted p < {args.alpha:g}, spread limit "
        f"{args.max_spread:.0%}"
    )
    for judged, baseline in ((1, 3), (3, 8)):
        print(f"{judged} judged process(es) against a baseline of {baseline}:")
        report(runs, stored_plans(runs, judged, baseline), args)
    for each in (3, 5):
        print(f"A/B, {each} processes a side:")
        report(runs, ab_plans(runs, each), args)


if __name__ == "__main__":
    main()
