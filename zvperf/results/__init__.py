"""Benchmark results, readable without torch or pytest: the typed schema, loading, sanity flags, figures
derived across a run, and the summary table. ``zvperf.report`` and ``zvperf.gate`` build on this alone."""

from zvperf.results.schema import RESULTS_FORMAT, BenchmarkFacts, Result, ResultsFile, load_results

__all__ = ["RESULTS_FORMAT", "BenchmarkFacts", "Result", "ResultsFile", "load_results"]
