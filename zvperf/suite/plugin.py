"""The zvperf pytest plugin, registered through the ``pytest11`` entry point.

It adds the ``--zv-*`` options, parametrizes the ``zv_run`` (model x steps x backend x precision
[x length x batch]), ``zv_utterance`` (model x steps x backend x precision) and ``zv_config`` (model x
backend x precision) fixtures from the matrix, orders the
benchmarks so that each configuration is built once, and at the end of the session adds speed-ups
and sanity flags to every result's extra_info, machine facts to pytest-benchmark's machine_info,
runs the regression gate and baseline update when asked (``--zv-gate``, ``--zv-update-baseline``),
and prints one summary table and the gate's report.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from zvperf.errors import ZvperfError
from zvperf.files import write_atomic
from zvperf.results import sanity
from zvperf.results.derived import add_speedups
from zvperf.results.schema import DESELECTED, ERROR, FAILED, RESULTS_FORMAT, SKIPPED, Result, Unmeasured, benchmark_id
from zvperf.results.summary import summary_lines
from zvperf.suite.engines import EngineCache
from zvperf.suite.machine import machine_summary, onnxruntime_providers
from zvperf.suite.matrix import Combo, Config
from zvperf.suite.options import BenchOptions, add_options, paths_read_as_tests
from zvperf.suite.session import BenchSession
from zvperf.suite.session_gate import GateRun, session_results

_SESSION = pytest.StashKey[BenchSession]()
_RESULTS = pytest.StashKey[list[Result]]()
_GATE = pytest.StashKey[GateRun]()
_GATE_LINES = pytest.StashKey[list[str]]()
_UNMEASURED = pytest.StashKey[dict[str, Unmeasured]]()  # benchmark id -> why it has no timing


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    for warning in paths_read_as_tests(config):
        config.issue_config_time_warning(pytest.PytestConfigWarning(warning), stacklevel=2)
    try:
        options = BenchOptions.from_config(config)
        config.stash[_GATE] = GateRun.from_config(config, options.device)
    except ZvperfError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[_SESSION] = BenchSession(options, EngineCache(options))
    config.stash[_UNMEASURED] = {}
    # The gate pools raw rounds and takes their medians; have pytest-benchmark keep them in its JSON.
    if hasattr(config.option, "benchmark_save_data"):
        config.option.benchmark_save_data = True


def _session(config: pytest.Config) -> BenchSession:
    return config.stash[_SESSION]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    matrix = _session(metafunc.config).options.matrix
    if "zv_run" in metafunc.fixturenames:
        metafunc.parametrize("zv_run", matrix.combos, ids=[c.id for c in matrix.combos], indirect=True)
    if "zv_utterance" in metafunc.fixturenames:
        metafunc.parametrize("zv_utterance", matrix.utterances, ids=[c.id for c in matrix.utterances], indirect=True)
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
def zv_utterance(request: pytest.FixtureRequest) -> Combo:
    """One end-to-end configuration: model, step count, backend, precision (one utterance, the text's length)."""
    return request.param


@pytest.fixture
def zv_config(request: pytest.FixtureRequest) -> Config:
    """One built configuration: model, backend, precision."""
    return request.param


def _config_of(item: pytest.Item) -> Config | None:
    params = getattr(item, "callspec", None)
    if params is None:
        return None
    names = ("zv_run", "zv_utterance", "zv_config")
    value = next((params.params[name] for name in names if name in params.params), None)
    if isinstance(value, Combo):
        return value.config
    return value if isinstance(value, Config) else None


def _position(options: BenchOptions, item: pytest.Item) -> int:
    """The item's configuration's place in the matrix, -1 for a test that is not a benchmark of it."""
    config, configs = _config_of(item), list(options.matrix.configs)
    return configs.index(config) if config in configs else -1


def _in_other_shard(options: BenchOptions, item: pytest.Item) -> bool:
    index, count = options.shard
    position = _position(options, item)
    return count > 1 and position >= 0 and position % count != index


def _benchmark_id(item: pytest.Item) -> str | None:
    """``zipvoice_distill-4step-torch-fp32 solver`` for a benchmark of the matrix, None for other tests."""
    if _config_of(item) is None or not isinstance(item, pytest.Function):
        return None
    return benchmark_id(item.callspec.id, item.originalname.removeprefix("test_"))


def _unmeasured_reason(config: pytest.Config, item: pytest.Item) -> Unmeasured | None:
    """How the item ended without a timing, as recorded so far (None: it may still be timed)."""
    name = _benchmark_id(item)
    return None if name is None else config.stash[_UNMEASURED].get(name)


def _record_unmeasured(config: pytest.Config, item: pytest.Item, outcome: str, reason: str) -> None:
    """Keep the first way a benchmark ended without a timing (a setup skip is not followed by a call)."""
    name = _benchmark_id(item)
    if name is not None:
        config.stash[_UNMEASURED].setdefault(name, Unmeasured(outcome, reason.strip()))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A benchmark that skipped, failed (a backend that disagrees with torch) or errored: its id and the message,
    for the results JSON, so that the gate can say why a configuration has no result."""
    report = yield
    if report.skipped and isinstance(report.longrepr, tuple):
        _record_unmeasured(item.config, item, SKIPPED, report.longrepr[2].removeprefix("Skipped: "))
    elif report.failed:
        message = call.excinfo.exconly().removeprefix("Failed: ") if call.excinfo else report.longreprtext
        lines = message.strip().splitlines() or ["no message"]
        _record_unmeasured(item.config, item, FAILED if report.when == "call" else ERROR, lines[0])
    return report


def pytest_deselected(items: list[pytest.Item]) -> None:
    """Benchmarks left out by -k/-m: recorded, as the gate counts a baseline entry without a result as missing.
    Another shard's configurations are not this process's to report."""
    for item in items:
        options = _session(item.config).options
        if not _in_other_shard(options, item):
            keyword, marks = item.config.option.keyword, item.config.option.markexpr
            selection = " ".join(f"{flag} {value!r}" for flag, value in (("-k", keyword), ("-m", marks)) if value)
            _record_unmeasured(item.config, item, DESELECTED, f"deselected by this run's selection ({selection})")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Group benchmarks by configuration (each is then built once), in matrix order, keeping other tests in
    place; leave out the kinds of benchmark the matrix does not time, and with --zv-shard I/N keep only the
    configurations of this shard."""
    options = _session(config).options
    position_of = {id(item): _position(options, item) for item in items}
    kinds = options.matrix.kinds
    for item in items:
        name = _benchmark_id(item)
        if name is not None and name.rpartition(" ")[2] not in kinds:
            # Recorded before the hook, whose reason (this run's -k) it would otherwise get.
            why = f"not a row of the {options.matrix_name} matrix, which times {', '.join(kinds)}"
            _record_unmeasured(config, item, DESELECTED, why)
    dropped = [item for item in items if _in_other_shard(options, item) or _unmeasured_reason(config, item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in dropped]
    positions = [i for i, item in enumerate(items) if position_of[id(item)] >= 0]
    grouped = sorted((items[i] for i in positions), key=lambda item: position_of[id(item)])
    for position, item in zip(positions, grouped, strict=True):
        items[position] = item


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> Any:
    """Before pytest-benchmark writes its JSON (in its own wrapper, after this one's first half): speed-ups
    and sanity flags into every result's extra_info; then the gate and the baseline update, which see those
    flags and, on a failing gate, turn the session's exit status into a failure."""
    config = session.config
    bench = config.stash.get(_SESSION, None)
    if bench is not None and bench.benchmarks:
        bench.cache.release()
        timed = [b for b in bench.benchmarks if b.stats]
        results = [Result.from_entry(b.stats.as_dict(include_data=True)) for b in timed]
        add_speedups(results)
        sanity.check(results)
        for benchmark, result in zip(timed, results, strict=True):
            benchmark.extra_info.update(result.facts.as_dict())  # what pytest-benchmark writes to its JSON
        config.stash[_RESULTS] = results
    gate = config.stash.get(_GATE, None)
    if gate is not None and gate.active:
        _run_gate(session, gate)
    yield
    path = config.getoption("benchmark_json", None)
    if path is not None and bench is not None and not bench.benchmarks and _unmeasured(config):
        _write_untimed_json(config, path)


def _unmeasured(config: pytest.Config) -> dict[str, Unmeasured]:
    """The benchmarks this run collected and did not time, and why."""
    measured = {r.id for r in config.stash.get(_RESULTS, [])}
    return {name: u for name, u in config.stash.get(_UNMEASURED, {}).items() if name not in measured}


def _write_untimed_json(config: pytest.Config, path: Any) -> None:
    """pytest-benchmark writes no JSON when nothing was timed; a run whose every benchmark skipped or failed still
    writes one, through pytest-benchmark's own hooks, holding the reasons (and replacing an older file that the
    gate would otherwise read as this run's)."""
    machine_info = config.hook.pytest_benchmark_generate_machine_info(config=config)
    config.hook.pytest_benchmark_update_machine_info(config=config, machine_info=machine_info)
    commit_info = config.hook.pytest_benchmark_generate_commit_info(config=config)
    output = config.hook.pytest_benchmark_generate_json(
        config=config, benchmarks=[], include_data=True, machine_info=machine_info, commit_info=commit_info
    )
    config.hook.pytest_benchmark_update_json(config=config, benchmarks=[], output_json=output)
    write_atomic(path, json.dumps(output, indent=4) + "\n")


def _run_gate(session: pytest.Session, gate: GateRun) -> None:
    config = session.config
    results, unmeasured = config.stash.get(_RESULTS, []), _unmeasured(config)
    if not results and not unmeasured:
        config.stash[_GATE_LINES] = ["zvperf gate: no benchmark results to compare or store (--benchmark-only?)"]
        return
    lines, failed = gate.finish(session_results(config, results, _session(config).options.device, unmeasured))
    config.stash[_GATE_LINES] = lines
    if failed and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    session = _session(config)
    machine_info["zvperf"] = machine_summary(session.options.device)
    machine_info["zvperf"]["onnxruntime_providers"] = onnxruntime_providers()
    machine_info["zvperf"]["gemm"] = dict(session.gemm)
    checkout = session.options.zipvoice
    machine_info["zvperf"]["zipvoice"] = checkout.facts() if checkout is not None else None


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: Any, output_json: dict[str, Any]) -> None:
    options = _session(config).options
    results = config.stash.get(_RESULTS, [])
    output_json["zvperf"] = {
        "format": RESULTS_FORMAT,
        "matrix": options.matrix_name,
        "rounds": options.rounds,
        "warmup_rounds": options.warmup_rounds,
        "text": options.text,
        "prompt_wav": options.prompt_wav.name,
        "weights": sorted({r.facts.weights for r in results}),
        "injected_slowdown": options.slowdown,
        "flags": {r.id: list(r.flags) for r in results if r.flags},
        "unmeasured": {name: dataclasses.asdict(u) for name, u in _unmeasured(config).items()},
    }


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    results = config.stash.get(_RESULTS, [])
    if results:
        options = _session(config).options
        weights = sorted({r.facts.weights for r in results})
        header = f"zvperf summary ({options.matrix_name} matrix, {options.device}, weights: {', '.join(weights)})"
        if "synthetic" in weights:
            header += " - synthetic weights: timings are real, audio is noise"
        terminalreporter.write_sep("=", "zvperf")
        for line in summary_lines(results, header):
            terminalreporter.write_line(line)
    gate_lines = config.stash.get(_GATE_LINES, [])
    if gate_lines:
        terminalreporter.write_sep("=", "zvperf gate")
        for line in gate_lines:
            terminalreporter.write_line(line, red=line.startswith(("FAIL", "gate FAILED", "zvperf gate: error")))
