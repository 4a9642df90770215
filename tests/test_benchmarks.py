"""The benchmarks: run with `pytest --benchmark-only` (plain `pytest` skips them).

Select with -k: `-k distill`, `-k 4step`, `-k solver`, `-k trt`. Options: `pytest --help`, group zvperf.
"""

from zvperf.bench import benchmarks


def test_solver(benchmark, zv_session, zv_run):
    benchmarks.time_solver(benchmark, zv_session, zv_run)


def test_e2e(benchmark, zv_session, zv_utterance):
    benchmarks.time_e2e(benchmark, zv_session, zv_utterance)


def test_text_encoder(benchmark, zv_session, zv_config):
    benchmarks.time_text_encoder(benchmark, zv_session, zv_config)


def test_vocoder(benchmark, zv_session, zv_config):
    benchmarks.time_vocoder(benchmark, zv_session, zv_config)


def test_cold_start(benchmark, zv_session, zv_config):
    benchmarks.time_cold_start(benchmark, zv_session, zv_config)
