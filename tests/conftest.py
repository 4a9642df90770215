"""Shared fixtures: the bundled conformance cases and small models built from them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
CONFORMANCE = DATA / "conformance"
CASE_DIRS = sorted(p for p in CONFORMANCE.iterdir() if p.is_dir())


@pytest.fixture
def case_copy(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A writable copy of a conformance case folder (the parametrized one, or tiny_zipvoice_distill)."""
    name = getattr(request, "param", "tiny_zipvoice_distill")
    target = tmp_path / name
    shutil.copytree(CONFORMANCE / name, target)
    for path in target.iterdir():
        path.chmod(0o644)
    return target
