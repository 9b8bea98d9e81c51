"""A job's input side: its file patterns made into files, and files read as numbered lines.

Both runners read their inputs through here, so a line is numbered, and a pattern that
matches nothing fails, the same way whichever runner reads it.
"""

from __future__ import annotations

from collections.abc import Iterator

from service.batch.lines import LineRef, RawLine
from service.batch.storage import FileInfo, Storage, iter_lines
from service.errors import InvalidInput


def expand_inputs(storage: Storage, patterns: list[str]) -> list[FileInfo]:
    """Every pattern must match something: a typo should fail the job, not yield 0 lines.

    A file matched by several patterns is read once, in the order it was first matched."""
    seen: dict[str, FileInfo] = {}
    for pattern in patterns:
        found = storage.expand(pattern)
        if not found:
            raise InvalidInput(f"no input files match {pattern}")
        for f in found:
            seen.setdefault(f.path, f)
    return list(seen.values())


def read_lines(storage: Storage, path: str, max_line_bytes: int) -> Iterator[RawLine]:
    """One file's lines with their 1-based numbers (the error records cite them); a line over
    `max_line_bytes` comes as its length, so memory stays bounded."""
    with storage.open_read(path) as stream:
        for number, raw in enumerate(iter_lines(stream, max_line_bytes), start=1):
            yield LineRef(path, number), raw
