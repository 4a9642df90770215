"""Reading the user's files with one clear sentence for each way it can go wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from zvperf.errors import ZvperfError


def read_text(path: Path | str, label: str | None = None) -> str:
    """The UTF-8 text of ``path``, byte for byte (line endings kept); a missing or unreadable file is a
    ZvperfError starting with ``label`` (default: the path)."""
    label = label or str(path)
    try:
        return Path(path).read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ZvperfError(f"{label}: file not found.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ZvperfError(f"{label}: cannot be read as UTF-8 text ({exc}).") from None


def read_json(path: Path | str) -> Any:
    """The parsed JSON of ``path``; a missing, unreadable or malformed file is a ZvperfError naming it."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ZvperfError(f"{path}: not valid JSON ({exc}).") from None
