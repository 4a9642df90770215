"""The package's layers: each imports only from the layers below it, and the torch-free ones stay torch-free.

cli -> report -> suite -> gate / history / results -> backends -> engine -> files, processes, errors, argtypes
(gate and history may use results, never the reverse nor each other; report uses results and reads the history).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "zvperf"
ROOT = Path(__file__).parents[1]

# Higher imports lower, never the reverse, and never sideways between two parts of one height.
LAYERS = {
    "__main__": 9,  # python -m zvperf
    "cli": 8,
    "report": 7,
    "suite": 6,
    "gate": 5,  # gate and results are one layer, the gate judging results: the gate sits just above
    "history": 5,  # beside the gate: the history keeps results, it does not judge them
    "results": 4,
    "backends": 3,
    "models": 2.5,  # the public import path of the engine's models
    "engine": 2,
    "files": 1,
    "processes": 1,  # child processes in groups of their own, stopped with all they started
    "argtypes": 1,
    "errors": 0.5,
    "__init__": 0,  # the package's version string
}
# Beyond the layer order: the report is built from results (and the history's runs); the history keeps results alone.
ONLY = {
    "report": {"report", "results", "history", "files", "errors"},
    "history": {"history", "results", "files", "errors"},
}
# The module that writes the history: the report reads the history and must not import it.
HISTORY_WRITER = "zvperf.history.writer"


def _part(module: str) -> str:
    """``zvperf.gate.judge`` -> ``gate``; ``zvperf`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[str]:
    """Every zvperf module ``path`` imports, at the top or inside a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.append(".".join([*base, *([node.module] if node.module else [])]))
            elif node.module:
                found += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return [name for name in found if name == "zvperf" or name.startswith("zvperf.")]


def test_every_module_imports_only_from_its_own_layer_or_below():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = _part(_module_name(path))
        for target in _imports(path):
            imported = _part(target)
            if imported not in LAYERS:  # zvperf.<name> where name is an attribute of the package
                continue
            below = imported == importer or LAYERS[imported] < LAYERS[importer]
            if not below or imported not in ONLY.get(importer, {imported}):
                problems.append(f"{path.relative_to(ROOT)} ({importer}) imports {target} ({imported})")
    assert not problems, "\n".join(problems)


def test_the_report_reads_the_history_but_never_writes_it():
    writers = [
        f"{path.relative_to(ROOT)} imports {target}"
        for path in sorted((PACKAGE / "report").rglob("*.py"))
        for target in _imports(path)
        if target == HISTORY_WRITER or target.startswith(f"{HISTORY_WRITER}.")
    ]
    assert not writers, writers


def test_the_layer_table_covers_every_part_of_the_package():
    parts = {_part(_module_name(path)) for path in PACKAGE.rglob("*.py")}
    assert parts <= set(LAYERS), parts - set(LAYERS)


def _loaded_after(code: str) -> set[str]:
    """The top-level modules a fresh interpreter has loaded after running ``code``."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    return set(json.loads(completed.stdout.strip().splitlines()[-1]))


def test_results_gate_and_history_import_neither_torch_nor_pytest():
    folders = ("results", "gate", "history")
    modules = [_module_name(path) for folder in folders for path in sorted((PACKAGE / folder).glob("*.py"))]
    loaded = _loaded_after("\n".join(f"import {name}" for name in modules))
    assert not loaded & {"torch", "pytest", "_pytest"}


@pytest.mark.parametrize(
    "argv",
    [
        ["compare", "tests/data/report/cpu.json", "--baselines-dir", "baselines"],
        ["report", "tests/data/report/cpu.json", "--lang", "en", "-o", "{tmp}/report.md"],
        ["baseline", "show", "--hardware-key", "cpu-amd-epyc-f25m1-avx2-2c"],
        ["history", "add", "tests/data/report/cpu.json", "--history-dir", "{tmp}/history"],
        ["export", "--format", "bencher", "tests/data/report/cpu.json", "-o", "{tmp}/bmf.json"],
        ["--help"],
    ],
    ids=lambda argv: argv[0],
)
def test_commands_on_results_start_without_torch(argv, tmp_path):
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    loaded = _loaded_after(f"from zvperf.cli import main\nmain({args!r})")
    assert "torch" not in loaded


def test_help_loads_no_subcommand():
    script = (
        "from zvperf.cli import main\nimport sys\nmain(['--help'])\n"
        "print(sorted(m for m in sys.modules if m.startswith('zvperf.cli.')))"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    assert completed.stdout.strip().splitlines()[-1] == "[]"
