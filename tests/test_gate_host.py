"""The gate takes the host's speed out of a CPU row's process medians: each process timed a fixed workload beside
its rounds (zvperf.suite.timing.HostReference), and a host that ran every row of a process slower ran it slower
too."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gate_data import JUDGED, KEY, STORED, bench, spread_rounds, write_results
from zvperf.errors import ZvperfError
from zvperf.gate import baselines, judge
from zvperf.gate.config import GateConfig, Rule, load_config
from zvperf.results.schema import ResultsFile

ID = "zipvoice_distill-4step-torch-fp32"
WORKLOAD = "4 x [1024x512]@[512x2048] float32 matrix products"
REFERENCE = 0.025  # seconds, the workload's time on a quiet host


def processes(
    path: Path, hosts: list[float], code: float = 1.0, workload: str | None = WORKLOAD, **kwargs
) -> list[ResultsFile]:
    """One results file per process: each on a host ``hosts[i]`` times as slow as a quiet one (its rounds and its
    reference alike), the code ``code`` times as slow; ``workload`` None: no reference timed."""
    files = []
    for index, host in enumerate(hosts):
        rounds = [t * host * code for t in spread_rounds(0.1)]
        seconds = [REFERENCE * host * (1 + 0.01 * (i - 1)) for i in range(3)]  # median: REFERENCE * host
        extra = {"host_reference": {"workload": workload, "seconds": seconds, "median": REFERENCE * host}}
        entry = bench(ID, rounds, **(extra if workload else {}))
        files.append(write_results(path.with_name(f"{path.stem}-{index + 1}.json"), [entry], **kwargs))
    return files


# The baseline's eight processes on a host whose speed wandered by up to 8%, as a shared 2-vCPU VM's does.
BASELINE_HOSTS = [1.00, 1.03, 0.98, 1.08, 1.01, 0.97, 1.05, 1.02]


def verdict_of(tmp_path: Path, hosts: list[float], code: float, config: GateConfig | None = None, **kwargs):
    files = processes(tmp_path / "new.json", hosts, code, **kwargs)
    (verdict,) = judge.compare(files, tmp_path / "bl", config or GateConfig()).verdicts
    return verdict


@pytest.fixture
def baseline(tmp_path: Path) -> baselines.Entry:
    baselines.update(tmp_path / "bl", *processes(tmp_path / "old.json", BASELINE_HOSTS))
    stored = baselines.read(baselines.baseline_path(tmp_path / "bl", KEY))
    assert stored is not None
    return stored.entries[f"{ID} solver"]


def test_a_baseline_keeps_each_process_s_reference_and_its_workload(baseline: baselines.Entry):
    assert baseline.reference_workload == WORKLOAD
    assert baseline.process_references == pytest.approx([REFERENCE * h for h in BASELINE_HOSTS])
    assert len(baseline.process_references) == len(baseline.process_medians) == STORED


def test_a_slower_host_is_not_a_slowdown_and_a_faster_one_does_not_hide_one(tmp_path: Path, baseline):
    # Unchanged code on a host 20% slower in every process: its medians are 18% over the baseline's (whose host
    # was 1.5% slower than a quiet one, the median of BASELINE_HOSTS).
    slow_host = verdict_of(tmp_path, [1.20, 1.21, 1.19], 1.0)
    assert slow_host.status == judge.PASS and abs(slow_host.change) < 0.01, slow_host.lines()
    assert "(+0.0% with the host's speed taken out (raw +18.2%, host reference +18.2%), p=" in slow_host.message
    # The same run judged on its raw medians, as gate.toml's host_adjusted = false asks, fails.
    raw = verdict_of(tmp_path, [1.20, 1.21, 1.19], 1.0, GateConfig(Rule(host_adjusted=False)))
    assert raw.status == judge.FAIL and raw.raw_change is None and "taken out" not in raw.message
    # Code 15% slower on a host 10% faster: raw +3.5%, under the threshold; the code's own +15% fails.
    hidden = verdict_of(tmp_path, [0.90, 0.91, 0.89], 1.15)
    assert hidden.status == judge.FAIL and hidden.change == pytest.approx(0.15, abs=0.01), hidden.lines()
    assert hidden.raw_change is not None and hidden.raw_change < 0.10


def test_sides_that_cannot_be_set_side_by_side_are_judged_raw_and_say_why(tmp_path: Path, baseline):
    cases = {
        "no reference": ({"workload": None}, "a process of the run timed no host reference"),
        "other torch": ({"torch": "2.12.0"}, "torch differs from the baseline's, and the host reference is torch's"),
        "other workload": ({"workload": "16 x bf16"}, f"the host references differ (16 x bf16 vs {WORKLOAD})"),
    }
    for name, (kwargs, why) in cases.items():
        files = processes(tmp_path / f"{name}.json", [1.20, 1.21, 1.19], **kwargs)
        (verdict,) = judge.compare(files, tmp_path / "bl", GateConfig()).verdicts
        assert verdict.raw_change is None and verdict.change == pytest.approx(0.182, abs=0.001), name
        assert f"not adjusted for the host's speed: {why}" in " ".join(verdict.warnings), verdict.warnings


def test_a_baseline_stored_before_references_is_judged_raw_and_says_so(tmp_path: Path):
    baselines.update(tmp_path / "bl", *processes(tmp_path / "old.json", BASELINE_HOSTS, workload=None))
    verdict = verdict_of(tmp_path, [1.0, 1.01, 0.99], 1.0)
    assert verdict.raw_change is None
    assert verdict.warnings == [
        "not adjusted for the host's speed: the baseline's processes timed no host reference (stored before zvperf "
        "timed one?)"
    ]


def test_a_gpu_row_without_references_on_either_side_says_nothing_of_the_host(tmp_path: Path):
    baselines.update(tmp_path / "bl", *processes(tmp_path / "old.json", BASELINE_HOSTS, workload=None))
    verdict = verdict_of(tmp_path, [1.0, 1.01, 0.99], 1.0, workload=None)
    assert verdict.status == judge.PASS and not verdict.warnings and verdict.processes == (JUDGED, STORED)


def test_host_adjusted_is_true_or_false_in_gate_toml(tmp_path: Path):
    config = tmp_path / "gate.toml"
    config.write_text('[override."cpu-*/*"]\nhost_adjusted = false\n')
    assert not load_config(config, tmp_path).rule(f"{ID} solver", KEY).host_adjusted
    assert load_config(config, tmp_path).rule(f"{ID} solver", "nvidia-h100").host_adjusted
    config.write_text("host_adjusted = 1\n")
    with pytest.raises(ZvperfError) as error:
        load_config(config, tmp_path)
    assert str(error.value) == f"gate config {config}: host_adjusted must be true or false, got 1."
