"""Checks for command-line values, as argparse ``type=`` functions: shared by the pytest plugin's options
(pytest parses with argparse too) and the ``zvperf`` command, so a bad value is refused while the command
line is parsed, with argparse's usage message naming the option."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def bounded_int(low: int) -> Callable[[str], int]:
    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        return value

    check.__name__ = f"int >= {low}"
    return check


def bounded_float(low: float, high: float, *, open_low: bool = False) -> Callable[[str], float]:
    def check(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (low < value if open_low else low <= value) or not value <= high:
            interval = f"{'above' if open_low else 'from'} {low:g} {'and at most' if open_low else 'to'} {high:g}"
            raise argparse.ArgumentTypeError(f"must be {interval}, got {text}")
        return value

    check.__name__ = "number"
    return check


def comma_list(
    item: Callable[[str], T], choices: Callable[[], Sequence[str]] | None = None
) -> Callable[[str], list[T]]:
    """A comma-separated list of ``item`` values (each checked; against ``choices()`` when given)."""

    def check(text: str) -> list[T]:
        values = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            if choices is not None and part not in (known := choices()):
                raise argparse.ArgumentTypeError(f"{part!r} is not one of {', '.join(known)}")
            values.append(item(part))
        if not values:
            raise argparse.ArgumentTypeError("expected a comma-separated list")
        return values

    check.__name__ = "comma-separated list"
    return check


def shard(text: str) -> tuple[int, int]:
    """``I/N``: the I-th of N shards, 0 <= I < N."""
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise argparse.ArgumentTypeError(f"{text!r}: expected I/N with 0 <= I < N, such as 0/2")
    return int(index), int(count)
