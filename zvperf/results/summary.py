"""The table printed after a run: one row per configuration, readable without opening the JSON."""

from __future__ import annotations

from collections import defaultdict

from zvperf.results.schema import Result


def _ms(result: Result | None) -> str:
    return f"{result.median * 1e3:.1f}" if result else "-"


def _warm_start_ms(result: Result | None) -> str:
    """A cold-start row's warm start (its warm_* phases added up: the second start on the machine), or "-"."""
    phases = (result.facts.phases_s or {}) if result else {}
    warm = [seconds for name, seconds in phases.items() if name.startswith("warm_")]
    return f"{sum(warm) * 1e3:.1f}" if warm else "-"


def gflops(rate: float | None) -> str:
    """A FLOP rate in GFLOP/s (1 decimal), or "-"."""
    return f"{rate / 1e9:.1f}" if rate else "-"


def percent(fraction: float | None) -> str:
    """A fraction as a whole percentage (one decimal below 10%), or "-"."""
    if fraction is None:
        return "-"
    return f"{fraction:.1%}" if fraction < 0.1 else f"{fraction:.0%}"


def rows(results: list[Result]) -> list[dict[str, str]]:
    """One row per timed configuration (model-steps-backend-precision[-length])."""
    by_config: dict[str, dict[str, Result]] = defaultdict(dict)
    for result in results:
        if result.kind in ("solver", "e2e"):
            by_config[result.config_id][result.kind] = result
    table = []
    for config_id, kinds in by_config.items():
        solver, e2e = kinds.get("solver"), kinds.get("e2e")
        main = e2e or solver
        assert main is not None
        speedup = main.facts.speedup_vs_zipvoice16
        memory = max((m for m in (r.facts.peak_memory_mib for r in kinds.values()) if m is not None), default=None)
        flags = sorted({f.split(":")[0] for r in kinds.values() for f in r.flags})
        table.append(
            {
                "configuration": config_id,
                "solver ms": _ms(solver),
                "e2e ms": _ms(e2e),
                "RTF": f"{main.facts.rtf:.4f}",
                "speed-up": f"{speedup:.2f}x" if speedup else "-",
                "GFLOP/s": gflops(solver.facts.flop_rate if solver else None),
                "of GEMM peak": percent(solver.facts.gemm_efficiency if solver else None),
                "peak MiB": f"{memory:.0f}" if memory is not None else "-",
                "flags": ", ".join(flags) or "-",
            }
        )
    return table


def component_rows(results: list[Result]) -> list[dict[str, str]]:
    """Text encoder, vocoder, cold and warm start, per built configuration."""
    by_config: dict[str, dict[str, Result]] = defaultdict(dict)
    for result in results:
        if result.kind in ("text_encoder", "vocoder", "cold_start"):
            by_config[result.config_id][result.kind] = result
    return [
        {
            "configuration": config_id,
            "text encoder ms": _ms(kinds.get("text_encoder")),
            "vocoder ms": _ms(kinds.get("vocoder")),
            "cold start ms": _ms(kinds.get("cold_start")),
            "warm start ms": _warm_start_ms(kinds.get("cold_start")),
        }
        for config_id, kinds in by_config.items()
    ]


def format_table(table: list[dict[str, str]], left: tuple[str, ...] = ("configuration", "flags")) -> list[str]:
    """Aligned text columns: the ``left`` ones left-aligned, numbers right-aligned."""
    if not table:
        return []
    columns = list(table[0])
    widths = {c: max(len(c), *(len(row[c]) for row in table)) for c in columns}
    align = {c: str.ljust if c in left else str.rjust for c in columns}
    lines = ["  ".join(align[c](c, widths[c]) for c in columns)]
    lines.append("  ".join("-" * widths[c] for c in columns))
    lines += ["  ".join(align[c](row[c], widths[c]) for c in columns) for row in table]
    return lines


def summary_lines(results: list[Result], header: str) -> list[str]:
    lines = [header, *format_table(rows(results))]
    components = component_rows(results)
    if components:
        lines += ["", *format_table(components)]
    flagged = [(r, f) for r in results for f in r.flags]
    if flagged:
        lines += ["", "flags:"] + [f"  {r.id}: {f}" for r, f in flagged]
    return lines
