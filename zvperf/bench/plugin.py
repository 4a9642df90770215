"""The zvperf pytest plugin, registered through the ``pytest11`` entry point.

It adds the ``--zv-*`` options, parametrizes the ``zv_run`` (model x steps x backend x precision
[x length]) and ``zv_config`` (model x backend x precision) fixtures from the matrix, orders the
benchmarks so that each configuration is built once, and at the end of the session adds speed-ups
and sanity flags to every result's extra_info, machine facts to pytest-benchmark's machine_info, and
prints one summary table.
"""

from __future__ import annotations

from typing import Any

import pytest

from zvperf.bench import sanity
from zvperf.bench.benchmarks import BenchSession
from zvperf.bench.engines import EngineCache
from zvperf.bench.machine import machine_summary
from zvperf.bench.matrix import Combo, Config
from zvperf.bench.options import BenchOptions, add_options
from zvperf.bench.results import Result, add_speedups
from zvperf.bench.summary import summary_lines
from zvperf.errors import ZvperfError

_SESSION = pytest.StashKey[BenchSession]()
_RESULTS = pytest.StashKey[list[Result]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    try:
        options = BenchOptions.from_config(config)
    except ZvperfError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[_SESSION] = BenchSession(options, EngineCache(options))
    # The gate compares raw rounds; have pytest-benchmark keep them in its JSON.
    if hasattr(config.option, "benchmark_save_data"):
        config.option.benchmark_save_data = True


def _session(config: pytest.Config) -> BenchSession:
    return config.stash[_SESSION]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    matrix = _session(metafunc.config).options.matrix
    if "zv_run" in metafunc.fixturenames:
        metafunc.parametrize("zv_run", matrix.combos, ids=[c.id for c in matrix.combos], indirect=True)
    if "zv_config" in metafunc.fixturenames:
        metafunc.parametrize("zv_config", matrix.configs, ids=[c.id for c in matrix.configs], indirect=True)


@pytest.fixture(scope="session")
def zv_session(pytestconfig: pytest.Config) -> BenchSession:
    """The benchmark session: options, the engine cache and the results so far."""
    return _session(pytestconfig)


@pytest.fixture
def zv_run(request: pytest.FixtureRequest) -> Combo:
    """One timed combination: model, step count, backend, precision (and length)."""
    return request.param


@pytest.fixture
def zv_config(request: pytest.FixtureRequest) -> Config:
    """One built configuration: model, backend, precision."""
    return request.param


def _config_of(item: pytest.Item) -> Config | None:
    params = getattr(item, "callspec", None)
    if params is None:
        return None
    value = params.params.get("zv_run") or params.params.get("zv_config")
    if isinstance(value, Combo):
        return value.config
    return value if isinstance(value, Config) else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Group benchmarks by configuration (each is then built once), in matrix order, keeping other tests in place."""
    order = {c: i for i, c in enumerate(_session(config).options.matrix.configs)}
    positions = [i for i, item in enumerate(items) if _config_of(item) in order]
    grouped = sorted((items[i] for i in positions), key=lambda item: order[_config_of(item)])  # type: ignore[index]
    for position, item in zip(positions, grouped, strict=True):
        items[position] = item


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> Any:
    """Before pytest-benchmark writes its JSON (in its own wrapper, after this one's first half): speed-ups
    and sanity flags into every result's extra_info."""
    bench = session.config.stash.get(_SESSION, None)
    if bench is not None and bench.benchmarks:
        bench.cache.release()
        results = [Result.from_entry(b.stats.as_dict(include_data=True)) for b in bench.benchmarks if b.stats]
        add_speedups(results)
        sanity.check(results)
        session.config.stash[_RESULTS] = results
    yield


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    machine_info["zvperf"] = machine_summary(_session(config).options.device)


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: Any, output_json: dict[str, Any]) -> None:
    options = _session(config).options
    results = config.stash.get(_RESULTS, [])
    output_json["zvperf"] = {
        "matrix": options.matrix_name,
        "rounds": options.rounds,
        "warmup_rounds": options.warmup_rounds,
        "text": options.text,
        "prompt_wav": options.prompt_wav.name,
        "weights": sorted({r.extra["weights"] for r in results}),
        "injected_slowdown": options.slowdown,
        "flags": {r.id: r.flags for r in results if r.flags},
    }


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    results = config.stash.get(_RESULTS, [])
    if not results:
        return
    options = _session(config).options
    weights = sorted({r.extra["weights"] for r in results})
    header = f"zvperf summary ({options.matrix_name} matrix, {options.device}, weights: {', '.join(weights)})"
    if "synthetic" in weights:
        header += " - synthetic weights: timings are real, audio is noise"
    terminalreporter.write_sep("=", "zvperf")
    for line in summary_lines(results, header):
        terminalreporter.write_line(line)
