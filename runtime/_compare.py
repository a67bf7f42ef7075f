"""Comparing two histories entry by entry: the first place they differ.

The restore drill compares each actor of a restored replica with the live
journal (same positions, the replica a prefix of the live history); comparing
two actors' histories step by step (a fork with its source) is the same walk
without positions.
"""

from __future__ import annotations

from collections.abc import Iterable
from zlib import crc32

import msgspec

import storage


class Difference(msgspec.Struct, frozen=True):
    """The first entry where two histories differ."""

    seq: int
    """The sequence number (in both histories) where they part."""
    left_position: int | None
    """The left entry's journal position (None: the left history has no entry there)."""
    right_position: int | None
    left: str
    """What the left history has there, in words."""
    right: str

    def __str__(self) -> str:
        where = self.left_position if self.left_position is not None else self.right_position
        return f"seq {self.seq} (position {where}): {self.left} / {self.right}"


def describe(entry: storage.Entry | None) -> str:
    """An entry in words, for a report (its payload by size and checksum: it may be large or private)."""
    if entry is None:
        return "no entry"
    return (
        f"{entry.kind} {entry.type!r} at position {entry.position} "
        f"({len(entry.data)} bytes, crc {crc32(entry.data):08x})"
    )


def first_difference(
    left: Iterable[storage.Entry],
    right: Iterable[storage.Entry],
    *,
    same_positions: bool = True,
    right_newer_than: int | None = None,
) -> Difference | None:
    """The first entry where ``left`` and ``right`` (one actor's entries each, in seq order) differ.

    Entries are equal when their seq, kind, type and payload are (and their
    position, with ``same_positions``). With ``right_newer_than``, entries the
    right history has beyond the end of the left one are expected when their
    position is greater than it: the left one is a copy taken at that position.
    Reading an entry whose checksum fails raises ``storage.UndecodableEntry``.
    """
    left_entries, right_entries = iter(left), iter(right)
    while True:
        a = next(left_entries, None)
        b = next(right_entries, None)
        if a is None and b is None:
            return None
        if a is None:
            assert b is not None
            if right_newer_than is not None and b.position > right_newer_than:
                return None
            return Difference(b.seq, None, b.position, describe(None), describe(b))
        if b is None:
            return Difference(a.seq, a.position, None, describe(a), describe(None))
        same = (a.seq, a.kind, a.type, a.data) == (b.seq, b.kind, b.type, b.data)
        if not same or (same_positions and a.position != b.position):
            return Difference(a.seq, a.position, b.position, describe(a), describe(b))
