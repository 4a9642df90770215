"""Shared fixtures (helpers that tests import are in tests/helpers.py)."""

from __future__ import annotations

import importlib
import importlib.util
import shutil
from pathlib import Path

import pytest

from tests.helpers import CONFORMANCE

# pytester's in-process runs drop the modules first imported inside them, and onnx's native extension cannot be
# imported a second time in one process: import the optional ONNX packages before any such run does.
for _name in ("onnx", "onnxruntime"):
    if importlib.util.find_spec(_name) is not None:
        importlib.import_module(_name)


@pytest.fixture
def case_copy(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A writable copy of a conformance case folder (the parametrized one, or tiny_zipvoice_distill)."""
    name = getattr(request, "param", "tiny_zipvoice_distill")
    target = tmp_path / name
    shutil.copytree(CONFORMANCE / name, target)
    for path in target.iterdir():
        path.chmod(0o644)
    return target
