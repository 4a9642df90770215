"""Shared fixtures (helpers that tests import are in tests/helpers.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import CONFORMANCE


@pytest.fixture
def case_copy(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A writable copy of a conformance case folder (the parametrized one, or tiny_zipvoice_distill)."""
    name = getattr(request, "param", "tiny_zipvoice_distill")
    target = tmp_path / name
    shutil.copytree(CONFORMANCE / name, target)
    for path in target.iterdir():
        path.chmod(0o644)
    return target
