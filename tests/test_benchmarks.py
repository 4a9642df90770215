"""The benchmarks: run with `pytest --benchmark-only` (plain `pytest` skips them). They live in the package
(zvperf.suite.benchmarks), so that an installed zvperf runs them too: `pytest --pyargs zvperf.suite.benchmarks`.

Select with -k: `-k distill`, `-k 4step`, `-k solver`, `-k trt`. Options: `pytest --help`, group zvperf.
"""

from zvperf.suite import benchmarks

# In the package's order (pytest collects a module's functions in the order they are bound here).
test_solver = benchmarks.test_solver
test_e2e = benchmarks.test_e2e
test_text_encoder = benchmarks.test_text_encoder
test_vocoder = benchmarks.test_vocoder
test_cold_start = benchmarks.test_cold_start
