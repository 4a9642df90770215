"""How the gate writes its numbers, in the text report and in Markdown. Standard library only, as
``zvperf.gate.markdown``, which uses them, runs from a bare checkout."""

from __future__ import annotations


def seconds(value: float) -> str:
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.1f} ms"
    return f"{value * 1e6:.0f} us"


def p_number(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"
