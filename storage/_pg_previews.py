"""Listings and whole values of a PostgreSQL journal's entries, read a bounded part at a time.

A PostgreSQL journal keeps every value in its row (TOAST compresses a large
one and stores it out of line); it has no payload store (docs/payloads.md says
why). A listing reads a value of up to :data:`storage._preview.WHOLE_MAX` bytes
whole and, of a larger one, only the ranges its preview walks
(``substring``, :data:`PREVIEW_RANGE` bytes at a time); a whole value is read
:data:`VALUE_RANGE` bytes at a time, so neither holds a 50 MB value at once.
"""

from __future__ import annotations

import functools
from typing import Any
from zlib import crc32

import psycopg

from ._contract import EntryPreview
from ._errors import UndecodableEntry
from ._payload_store import StoredValue
from ._payloads import BadReference
from ._preview import WHOLE_MAX, preview
from ._rows import PAGE_READ_MAX, corrupt

Conn = psycopg.Connection[Any]

PREVIEW_RANGE = 64 * 1024
"""Bytes a listing reads from a large value at a time."""
VALUE_RANGE = 1 << 20
"""Bytes read at a time when a whole value is streamed."""


def value_range(conn: Conn, position: int, offset: int, n: int) -> bytes:
    """Bytes ``offset`` to ``offset + n`` of the value of the entry at ``position``."""
    row = conn.execute(
        "SELECT substring(data FROM %s FOR %s) FROM journal WHERE position = %s", (offset + 1, n, position)
    ).fetchone()
    if row is None or len(row[0]) != n:
        raise BadReference(f"the entry at position {position} changed while it was read")
    return bytes(row[0])


def value_info(conn: Conn, actor: int, seq: int) -> tuple[int, int, int | None] | None:
    """``(position, size, crc)`` of one entry's value, or None."""
    row = conn.execute(
        "SELECT position, length(data), crc FROM journal WHERE actor = %s AND seq = %s", (actor, seq)
    ).fetchone()
    return (int(row[0]), int(row[1]), row[2]) if row else None


def previews(conn: Conn, actor: int, address: str, from_seq: int, kind: str | None, limit: int) -> list[EntryPreview]:
    """Up to ``limit`` entries from ``from_seq``, each decoded with long parts cut short (bounded reads)."""
    sql = (
        "SELECT position, seq, step, kind, type, CASE WHEN length(data) <= %s THEN data END, length(data), at, crc "
        "FROM journal WHERE actor = %s AND seq >= %s"
    )
    params: tuple[Any, ...] = (WHOLE_MAX, actor, from_seq)
    if kind is not None:
        sql += " AND kind = %s"
        params += (kind,)
    rows = conn.execute(sql + " ORDER BY seq LIMIT %s", (*params, limit)).fetchall()
    out: list[EntryPreview] = []
    budget = PAGE_READ_MAX
    for position, seq, step, kind_name, type_name, small, size, at, crc in rows:
        what = f"journal entry {address}#{seq}"
        if small is not None:
            data = bytes(small)
            if crc is not None and crc32(data) != crc:
                raise corrupt(what, position, type_name, seq)
            value = StoredValue(data, _nothing)
        else:  # large: the preview reads ranges of it (its crc is checked when it is read whole)
            value = StoredValue.ranges(int(size), crc, functools.partial(_preview_range, conn, position), PREVIEW_RANGE)
        try:
            decoded, truncated, read = preview(value)
        except BadReference as exc:
            raise UndecodableEntry(
                f"{what} at position {position} cannot be read: {exc}", position=position, type_name=type_name, seq=seq
            ) from None
        out.append(
            EntryPreview(position, address, seq, step, kind_name, type_name, at, value.size, False, truncated, decoded)
        )
        budget -= read
        if budget <= 0:
            break  # a page of many large entries ends early; the next page goes on from there
    return out


def _preview_range(conn: Conn, position: int, index: int, length: int) -> bytes:
    return value_range(conn, position, index * PREVIEW_RANGE, length)


def _nothing(ident: int, length: int) -> bytes:
    raise BadReference("a value held whole has no chunks")
