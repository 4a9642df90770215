"""Generated blocks inside a hand-written document: ``<!-- zvperf:begin NAME -->`` ... ``<!-- zvperf:end NAME -->``.

An update replaces what lies between each pair of markers and keeps every other byte as the author wrote it.
"""

from __future__ import annotations

import dataclasses
import re

from zvperf.errors import ZvperfError

MARKER = re.compile(r"<!--\s*zvperf:(begin|end)\s+(\S+?)\s*-->")


@dataclasses.dataclass(frozen=True)
class Block:
    name: str
    start: int  # offset just after the begin marker
    end: int  # offset of the end marker


def blocks(text: str, source: str) -> list[Block]:
    """The marker blocks of ``text`` in order; unbalanced or nested markers are an error naming ``source``."""
    found: list[Block] = []
    opened: tuple[str, int] | None = None
    for match in MARKER.finditer(text):
        kind, name = match.groups()
        if kind == "begin":
            if opened is not None:
                raise ZvperfError(f"{source}: marker 'zvperf:begin {name}' opens inside block {opened[0]!r}.")
            opened = (name, match.end())
        elif opened is None or opened[0] != name:
            inside = f" (block {opened[0]!r} is open)" if opened else ""
            raise ZvperfError(f"{source}: marker 'zvperf:end {name}' has no matching begin{inside}.")
        else:
            found.append(Block(name, opened[1], match.start()))
            opened = None
    if opened is not None:
        raise ZvperfError(f"{source}: marker 'zvperf:begin {opened[0]}' has no matching end.")
    return found


def contents(text: str, source: str) -> dict[str, str]:
    """Each block's name and the text between its markers; a name used twice is an error."""
    out: dict[str, str] = {}
    for block in blocks(text, source):
        if block.name in out:
            raise ZvperfError(f"{source}: block {block.name!r} appears twice.")
        out[block.name] = text[block.start : block.end]
    return out


def update(document: str, fresh: dict[str, str], source: str) -> str:
    """``document`` with each block's contents replaced by ``fresh[name]``; text outside the blocks is untouched."""
    found = blocks(document, source)
    if not found:
        raise ZvperfError(f"{source}: has no '<!-- zvperf:begin NAME -->' markers to update.")
    unknown = [b.name for b in found if b.name not in fresh]
    if unknown:
        raise ZvperfError(
            f"{source}: marker block {unknown[0]!r} is not one the report generates ({', '.join(fresh)})."
        )
    pieces, position = [], 0
    for block in found:
        pieces += [document[position : block.start], fresh[block.name]]
        position = block.end
    pieces.append(document[position:])
    return "".join(pieces)
