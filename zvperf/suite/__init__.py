"""The benchmark suite: a pytest plugin that builds each configuration on the device, times it with
pytest-benchmark, records telemetry and machine facts, and hands the results to ``zvperf.results`` and
``zvperf.gate``. The only layer that needs both torch and pytest."""
