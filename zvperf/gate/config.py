"""The regression gate's settings: defaults, and overrides per benchmark id pattern, from a TOML file.

TOML rather than JSON because this file is written by people and wants comments saying why a
benchmark has a looser threshold::

    threshold = 0.10    # fail when the median is more than 10% slower ...
    alpha = 0.01        # ... and the one-sided Mann-Whitney U p-value is below this
    max_spread = 0.10   # IQR / median above which a result (or its baseline) is too noisy to judge
    memory_threshold = 0.10     # off unless set: fail when peak memory is more than 10% above the baseline's
    energy_threshold = 0.15     # off unless set: the same for a GPU's energy per second of audio
    confirm_above = 0.02        # off unless set: a row that passed while over 2% slower is confirmed A/B too

    [override."* cold_start"]   # fnmatch on the benchmark id; every match applies, later ones win
    threshold = 0.25
    energy_threshold = false    # false turns a figure's threshold off again

    [override."cpu-*/*"]        # HARDWARE/ID: on the hardware keys that match only
    threshold = 0.05

    [[expected_absent]]         # configurations a hardware key is known not to have: their absence passes
    hardware = "nvidia-l4*"     # fnmatch on the hardware key
    benchmarks = ["*-trt-fp32 *"]
    reason = "TensorRT builds no fp32 engine of this model within the L4's memory"
"""

from __future__ import annotations

import dataclasses
import fnmatch
import sys
from pathlib import Path
from typing import Any

from zvperf.errors import ZvperfError
from zvperf.files import read_text
from zvperf.gate.metrics import METRICS, Metric
from zvperf.results.sanity import SPREAD_LIMIT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CONFIG_NAME = "gate.toml"


@dataclasses.dataclass(frozen=True)
class Rule:
    """How one benchmark is judged."""

    threshold: float = 0.10  # relative change of the median that counts as a regression (or an improvement)
    alpha: float = 0.01  # significance level of the one-sided Mann-Whitney U test
    max_spread: float = SPREAD_LIMIT  # IQR / median beyond which the rounds are too noisy to judge
    # Relative increase of a one-number-per-run figure (zvperf.gate.metrics) that fails; None: not judged.
    memory_threshold: float | None = None  # peak memory
    energy_threshold: float | None = None  # GPU energy per second of audio
    # A row the stored baseline passed while slower than this is re-run in the A/B confirmation too (None: only
    # failed and inconclusive rows are): the first judgement reads a slowdown near the threshold below it often
    # enough on a noisy machine to miss it, the A/B's alternating processes do not (docs/calibration.md).
    confirm_above: float | None = None
    # Judge a CPU row's process medians over the fixed workload each process timed beside its rounds (the host's
    # speed then), where both sides timed the same one under the same torch (docs/calibration.md).
    host_adjusted: bool = True

    def check(self, source: str) -> None:
        if not self.threshold > 0:
            raise ZvperfError(f"{source}: threshold must be above 0, got {self.threshold}.")
        if not 0 < self.alpha < 1:
            raise ZvperfError(f"{source}: alpha must be between 0 and 1, got {self.alpha}.")
        if not self.max_spread > 0:
            raise ZvperfError(f"{source}: max_spread must be above 0, got {self.max_spread}.")
        if self.confirm_above is not None and not 0 <= self.confirm_above < self.threshold:
            raise ZvperfError(
                f"{source}: confirm_above must be at least 0 and below the threshold {self.threshold:g} (or false: "
                f"off), got {self.confirm_above}."
            )
        for metric in METRICS:
            value = getattr(self, metric.setting)
            if value is not None and not value > 0:
                raise ZvperfError(f"{source}: {metric.setting} must be above 0 (or false: off), got {value}.")


SETTINGS = tuple(f.name for f in dataclasses.fields(Rule))
SWITCHABLE = frozenset({*(metric.setting for metric in METRICS), "confirm_above"})  # settings `false` turns off
SWITCHES = frozenset({"host_adjusted"})  # settings that are true or false


@dataclasses.dataclass(frozen=True)
class Absence:
    """Benchmarks that a hardware key is expected not to have (a backend its GPU cannot build), and why."""

    hardware: str  # fnmatch pattern on the hardware key
    benchmarks: tuple[str, ...]  # fnmatch patterns on benchmark ids
    reason: str

    def covers(self, hardware_key: str, benchmark_id: str) -> bool:
        return fnmatch.fnmatchcase(hardware_key, self.hardware) and any(
            fnmatch.fnmatchcase(benchmark_id, pattern) for pattern in self.benchmarks
        )


@dataclasses.dataclass(frozen=True)
class Override:
    """Settings for the benchmarks whose id matches ``pattern``, on the hardware keys that match ``hardware``."""

    pattern: str  # fnmatch on benchmark ids
    settings: dict[str, Any]
    hardware: str = "*"  # fnmatch on the hardware key

    @classmethod
    def parse(cls, name: str, settings: dict[str, Any], where: str) -> Override:
        """``[override."ID"]`` or ``[override."HARDWARE/ID"]``: benchmark ids have no slash, hardware keys neither."""
        hardware, slash, pattern = name.rpartition("/")
        if "/" in hardware:
            raise ZvperfError(
                f"{where}: more than one '/' (write HARDWARE/ID; neither a hardware key nor an id has one)."
            )
        return cls(pattern, settings, hardware if slash else "*")

    @property
    def name(self) -> str:
        """As gate.toml writes it: ``override."cpu-*/*"``."""
        where = "" if self.hardware == "*" else f"{self.hardware}/"
        return f'override."{where}{self.pattern}"'

    def applies(self, benchmark_id: str, hardware_key: str) -> bool:
        return fnmatch.fnmatchcase(benchmark_id, self.pattern) and fnmatch.fnmatchcase(hardware_key, self.hardware)


@dataclasses.dataclass
class GateConfig:
    defaults: Rule = Rule()
    overrides: list[Override] = dataclasses.field(default_factory=list)
    source: Path | None = None  # the file it came from (None: built-in defaults)
    expected_absent: list[Absence] = dataclasses.field(default_factory=list)

    def rule(self, benchmark_id: str, hardware_key: str) -> Rule:
        rule = self.defaults
        for override in self.overrides:
            if override.applies(benchmark_id, hardware_key):
                rule = dataclasses.replace(rule, **override.settings)
        return rule

    def judges(self, metric: Metric) -> bool:
        """Whether any benchmark's rule sets a threshold for this figure."""
        return getattr(self.defaults, metric.setting) is not None or any(
            override.settings.get(metric.setting) is not None for override in self.overrides
        )

    def absence(self, hardware_key: str, benchmark_id: str) -> Absence | None:
        """The entry saying this benchmark is expected to be absent on this hardware, if there is one."""
        return next((a for a in self.expected_absent if a.covers(hardware_key, benchmark_id)), None)


def _settings(table: dict[str, Any], where: str) -> dict[str, Any]:
    unknown = [k for k in table if k not in SETTINGS]
    if unknown:
        raise ZvperfError(f"{where}: unknown setting {unknown[0]!r} (known: {', '.join(SETTINGS)}).")
    settings: dict[str, float | bool | None] = {}
    for key, value in table.items():
        if key in SWITCHES:
            if not isinstance(value, bool):
                raise ZvperfError(f"{where}: {key} must be true or false, got {value!r}.")
            settings[key] = value
        elif key in SWITCHABLE and value is False:
            settings[key] = None  # TOML has no null: an override turns a figure's judgement off with false
        elif isinstance(value, int | float) and not isinstance(value, bool):
            settings[key] = float(value)
        else:
            off = " or false (off)" if key in SWITCHABLE else ""
            raise ZvperfError(f"{where}: {key} must be a number{off}, got {value!r}.")
    return settings


def _absences(value: Any, where: str) -> list[Absence]:
    example = 'tables like [[expected_absent]] with hardware = "...", benchmarks = ["..."], reason = "..."'
    if not isinstance(value, list) or not all(isinstance(table, dict) for table in value):
        raise ZvperfError(f"{where}: 'expected_absent' must be {example}.")
    absences = []
    for number, table in enumerate(value, 1):
        hardware, patterns, reason = table.get("hardware"), table.get("benchmarks"), table.get("reason")
        unknown = sorted(set(table) - {"hardware", "benchmarks", "reason"})
        if unknown:
            raise ZvperfError(f"{where}, expected_absent #{number}: unknown key {unknown[0]!r}.")
        valid_patterns = isinstance(patterns, list) and patterns and all(isinstance(p, str) for p in patterns)
        if not isinstance(hardware, str) or not valid_patterns or not isinstance(reason, str) or not reason:
            raise ZvperfError(f"{where}, expected_absent #{number}: needs {example.removeprefix('tables like ')}.")
        absences.append(Absence(hardware, tuple(patterns), reason))
    return absences


def load_config(path: Path | None, baselines_dir: Path) -> GateConfig:
    """The settings in ``path``, else in ``baselines_dir/gate.toml`` when it exists, else the defaults."""
    if path is None:
        path = baselines_dir / CONFIG_NAME
        if not path.exists():
            return GateConfig()
    text = read_text(path, f"gate config {path}")
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ZvperfError(f"gate config {path} is not valid TOML ({exc}).") from None
    overrides_table = document.pop("override", {})
    absences = _absences(document.pop("expected_absent", []), f"gate config {path}")
    defaults = Rule(**_settings(document, f"gate config {path}"))
    defaults.check(f"gate config {path}")
    if not isinstance(overrides_table, dict):
        raise ZvperfError(f"gate config {path}: 'override' must be tables like [override.\"* cold_start\"].")
    overrides = []
    for pattern, table in overrides_table.items():
        where = f"gate config {path}, [override.{pattern!r}]"
        if not isinstance(table, dict):
            raise ZvperfError(f"{where}: must be a table of settings.")
        settings = _settings(table, where)
        dataclasses.replace(defaults, **settings).check(where)
        overrides.append(Override.parse(pattern, settings, where))
    return GateConfig(defaults, overrides, path, absences)
