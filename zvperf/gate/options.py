"""The gate's command-line options, declared once for the pytest plugin (``--zv-`` prefix) and the ``zvperf``
command (no prefix), as pytest-benchmark shares ``add_global_options(addoption, prefix)`` between its
plugin and its CLI. ``add`` is ``pytest.OptionGroup.addoption`` or ``argparse.ArgumentParser.add_argument``:
both take argparse's keywords."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from zvperf.argtypes import bounded_int
from zvperf.gate.baselines import DEFAULT_DIR
from zvperf.gate.confirm import MIN_PROCESSES


def add_baseline_options(add: Callable[..., Any], prefix: str = "") -> None:
    """Where the baselines are: ``--{prefix}baselines-dir``."""
    add(
        f"--{prefix}baselines-dir",
        type=Path,
        metavar="DIR",
        default=DEFAULT_DIR,
        help="where the baseline files are (default: ./baselines, the repository's when run from its root)",
    )


def add_config_option(add: Callable[..., Any], prefix: str = "") -> None:
    """``--{prefix}gate-config`` (the CLI also takes ``--config``)."""
    names = [f"--{prefix}gate-config"] + ([] if prefix else ["--config"])
    add(*names, type=Path, metavar="FILE", help="gate settings (default: BASELINES_DIR/gate.toml when present)")


def add_gate_options(add: Callable[..., Any], prefix: str = "") -> None:
    """``--{prefix}baselines-dir``, ``--{prefix}gate-config`` (the CLI also takes ``--config``) and
    ``--{prefix}require-baseline``."""
    add_baseline_options(add, prefix)
    add_config_option(add, prefix)
    add(
        f"--{prefix}require-baseline",
        action="store_true",
        help="fail when this hardware has no baseline file, or nothing was judged (what CI wants)",
    )


def add_head_baselines_option(add: Callable[..., Any], prefix: str = "") -> None:
    """``--{prefix}head-baselines-dir``: the judged change's own baselines folder, named in the report when it
    differs from the one judged against."""
    add(
        f"--{prefix}head-baselines-dir",
        type=Path,
        metavar="DIR",
        help="the judged change's own baselines folder (with --baselines-dir at the base commit's): its edits are "
        "not used, and the report names them",
    )


def add_confirm_options(add: Callable[..., Any], prefix: str = "") -> None:
    """Where the base commit's checkout is, and how many processes of each side a confirmation runs."""
    add(
        f"--{prefix}base-checkout",
        type=Path,
        metavar="DIR",
        default=Path(".zvperf-base"),
        help="a checkout of the base commit, whose code runs with this environment (default: .zvperf-base)",
    )
    add(
        f"--{prefix}confirm-processes" if prefix else "--processes",
        type=bounded_int(MIN_PROCESSES),
        default=MIN_PROCESSES,
        metavar="N",
        help=f"processes of each commit, alternating base and head (default and minimum: {MIN_PROCESSES})",
    )
