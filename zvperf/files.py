"""Reading the user's files with one clear sentence for each way it can go wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from zvperf.errors import ZvperfError


def read_json(path: Path | str) -> Any:
    """The parsed JSON of ``path``; a missing, unreadable or malformed file is a ZvperfError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ZvperfError(f"{path}: file not found.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ZvperfError(f"{path}: cannot be read ({exc}).") from None
    except json.JSONDecodeError as exc:
        raise ZvperfError(f"{path}: not valid JSON ({exc}).") from None
