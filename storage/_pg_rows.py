"""Typed rows read from a PostgreSQL journal, and the queries that read them.

The same answers as :mod:`storage._rows` gives on SQLite (the conformance suite
checks both), one statement per answer: every read is one round trip and sees
one snapshot of the database.
"""

from __future__ import annotations

from typing import Any
from zlib import crc32

import psycopg

from ._contract import (
    STREAMED,
    ActorInfo,
    DeadLetter,
    Entry,
    EntryKind,
    EventRow,
    Idempotent,
    Pending,
    Snapshot,
    SnapshotInfo,
)
from ._errors import UndecodableEntry
from ._rows import TERMINAL_KINDS, corrupt

Conn = psycopg.Connection[Any]

PAGE = 1000
"""Rows per round trip when an actor's history is streamed."""

_ENTRY = "position, seq, step, kind, type, data, at, crc"


def _entry(address: str, row: tuple[Any, ...]) -> Entry:
    position, seq, step, kind, type_name, data, at, crc = row
    if crc is not None and crc32(data) != crc:
        raise corrupt(f"journal entry {address}#{seq}", position, type_name, seq)
    try:
        kind = EntryKind(kind)
    except ValueError:
        raise UndecodableEntry(
            f"journal entry {address}#{seq} at position {position} has an unknown kind {kind!r}",
            position=position,
            type_name=type_name,
            seq=seq,
        ) from None
    return Entry(position, address, seq, step, kind, type_name, bytes(data), at)


def actor_id(conn: Conn, address: str) -> int | None:
    """The integer id journal rows use for ``address``."""
    row = conn.execute("SELECT id FROM actors WHERE address = %s", (address,)).fetchone()
    return int(row[0]) if row else None


def entries_page(conn: Conn, actor: int, address: str, from_seq: int, kind: str | None, limit: int) -> list[Entry]:
    """Up to ``limit`` of an actor's entries with ``seq >= from_seq``, in order."""
    if kind is None:
        rows = conn.execute(
            f"SELECT {_ENTRY} FROM journal WHERE actor = %s AND seq >= %s ORDER BY seq LIMIT %s",
            (actor, from_seq, limit),
        ).fetchall()
    else:
        rows = conn.execute(
            f"SELECT {_ENTRY} FROM journal WHERE actor = %s AND seq >= %s AND kind = %s ORDER BY seq LIMIT %s",
            (actor, from_seq, kind, limit),
        ).fetchall()
    return [_entry(address, row) for row in rows]


_STREAM_FILTER = (
    f"(kind IN ('{EntryKind.START}', '{EntryKind.CHUNK}') OR (kind IN ('{EntryKind.EFFECT}', '{EntryKind.ATTEMPT}') "
    f"AND left(type, {len(STREAMED)}) = '{STREAMED}'))"
)


def stream_entries(conn: Conn, actor: int, address: str, from_seq: int, limit: int) -> list[Entry]:
    """Up to ``limit`` entries of the actor's stream with ``seq >= from_seq``, in order.

    Read through the ``(actor, seq)`` index, the kind filtered row by row, as on SQLite.
    """
    rows = conn.execute(
        f"SELECT {_ENTRY} FROM journal WHERE actor = %s AND seq >= %s AND {_STREAM_FILTER} ORDER BY seq LIMIT %s",
        (actor, from_seq, limit),
    ).fetchall()
    return [_entry(address, row) for row in rows]


def open_step(conn: Conn, actor: int, address: str) -> list[Entry]:
    """The entries of the actor's interrupted step (message first), or [] if none.

    Reads backwards from the newest entry in small pages and stops at the first
    entry that closes a step.
    """
    tail: list[Entry] = []
    before = 1 << 62
    while True:
        rows = conn.execute(
            f"SELECT {_ENTRY} FROM journal WHERE actor = %s AND seq < %s ORDER BY seq DESC LIMIT 16",
            (actor, before),
        ).fetchall()
        for row in rows:
            entry = _entry(address, row)
            if entry.kind in TERMINAL_KINDS:
                return _opened(tail)
            tail.append(entry)
            if entry.kind == EntryKind.MESSAGE:
                return _opened(tail)
        if len(rows) < 16:
            return _opened(tail)
        before = int(rows[-1][1])


def _opened(tail: list[Entry]) -> list[Entry]:
    tail.reverse()
    return tail if tail and tail[0].kind == EntryKind.MESSAGE else []


_ACTOR = (
    "id, address, type, (SELECT coalesce(max(seq), 0) FROM journal WHERE journal.actor = actors.id), "
    "status, reason, updated"
)


def actor(conn: Conn, address: str) -> ActorInfo | None:
    """The registry row of one actor."""
    row = conn.execute(f"SELECT {_ACTOR} FROM actors WHERE address = %s", (address,)).fetchone()
    return ActorInfo(*row) if row else None


def actors(conn: Conn, type_name: str | None = None) -> list[ActorInfo]:
    """All registered actors (of one type), by address (byte order, as SQLite sorts)."""
    if type_name is None:
        rows = conn.execute(f'SELECT {_ACTOR} FROM actors ORDER BY address COLLATE "C"').fetchall()
    else:
        rows = conn.execute(
            f'SELECT {_ACTOR} FROM actors WHERE type = %s ORDER BY address COLLATE "C"', (type_name,)
        ).fetchall()
    return [ActorInfo(*row) for row in rows]


def snapshot(conn: Conn, actor: int, address: str, before: int | None = None) -> Snapshot | None:
    """The newest snapshot of the actor (with ``seq < before`` when given)."""
    row = conn.execute(
        "SELECT seq, type, data, at, crc FROM snapshots WHERE actor = %s AND seq < %s ORDER BY seq DESC LIMIT 1",
        (actor, before if before is not None else 1 << 62),
    ).fetchone()
    if row is None:
        return None
    seq, type_name, data, at, crc = row
    return Snapshot(address, seq, type_name, bytes(data), at, crc)


def snapshots(conn: Conn, actor: int) -> list[SnapshotInfo]:
    """Every snapshot of the actor, oldest first."""
    rows = conn.execute("SELECT seq, at FROM snapshots WHERE actor = %s ORDER BY seq", (actor,)).fetchall()
    return [SnapshotInfo(*row) for row in rows]


_PENDING = (
    "id, target, handler, type, payload, due, idempotency_key, attempts, sender, at, timer_id, reply_to, reply_name"
)


def pending(conn: Conn) -> list[Pending]:
    """Every pending inbox message, in message-id order."""
    rows = conn.execute(f"SELECT {_PENDING} FROM inbox ORDER BY id").fetchall()
    return [Pending(*row) for row in rows]


def _idempotent(row: tuple[Any, ...]) -> Idempotent:
    key, address, step, reply, at, kind, handler = row
    return Idempotent(key, address, step, bytes(reply) if reply is not None else None, at, kind, handler)


_KEY = "key, address, step, reply, at, kind, handler"


def idempotent(conn: Conn, key: str) -> Idempotent | None:
    """The record of an idempotency key, if it was used."""
    row = conn.execute(f"SELECT {_KEY} FROM idempotency WHERE key = %s", (key,)).fetchone()
    return _idempotent(row) if row else None


def key_status(conn: Conn, key: str, step: int) -> tuple[Idempotent | None, bool]:
    """An idempotency key's record and whether its message is still pending: one statement, one snapshot."""
    row = conn.execute(
        f"SELECT {', '.join('i.' + c.strip() for c in _KEY.split(','))}, "
        "EXISTS (SELECT 1 FROM inbox WHERE id = %s) FROM (SELECT 1) AS one "
        "LEFT JOIN idempotency AS i ON i.key = %s",
        (step, key),
    ).fetchone()
    assert row is not None
    record = _idempotent(row[:7]) if row[0] is not None else None
    return record, bool(row[7])


def expired_keys(conn: Conn, cutoff: float, limit: int) -> list[str]:
    """Up to ``limit`` idempotency keys recorded before ``cutoff``, oldest first."""
    rows = conn.execute(
        "SELECT key FROM idempotency WHERE at < %s ORDER BY at, key LIMIT %s", (cutoff, limit)
    ).fetchall()
    return [str(row[0]) for row in rows]


def promise(conn: Conn, address: str, name: str) -> bytes | None:
    """A resolved value waiting for ``address`` under ``name``, if any."""
    row = conn.execute("SELECT value FROM promises WHERE address = %s AND name = %s", (address, name)).fetchone()
    return bytes(row[0]) if row else None


def dead_letters(conn: Conn) -> list[DeadLetter]:
    """Every dead letter, oldest first."""
    rows = conn.execute(
        "SELECT id, target, handler, type, payload, sender, attempts, reason, at FROM dead_letters ORDER BY id"
    ).fetchall()
    return [DeadLetter(*row) for row in rows]


def meta(conn: Conn, key: str) -> Any:
    """A value from the meta table, or None."""
    row = conn.execute("SELECT text_value, int_value, real_value FROM meta WHERE key = %s", (key,)).fetchone()
    return meta_value(row) if row else None


def meta_value(row: tuple[Any, ...] | list[Any]) -> Any:
    """The one value of a meta row's three columns."""
    text_value, int_value, real_value = row
    if text_value is not None:
        return text_value
    if int_value is not None:
        return int(int_value)
    return real_value


def seq_at(conn: Conn, actor: int, position: int) -> int:
    """The actor's last sequence number at journal ``position`` (0 if none yet)."""
    row = conn.execute(
        "SELECT coalesce(max(seq), 0) FROM journal WHERE actor = %s AND position <= %s", (actor, position)
    ).fetchone()
    return int(row[0]) if row else 0


def event_rows(conn: Conn, actor: int, after_seq: int, until_seq: int | None = None) -> list[EventRow]:
    """``(position, seq, type, data, crc)`` of an actor's events after ``after_seq``."""
    rows = conn.execute(
        "SELECT position, seq, type, data, crc FROM journal "
        "WHERE actor = %s AND seq > %s AND seq <= %s AND kind = 'event' ORDER BY seq",
        (actor, after_seq, until_seq if until_seq is not None else 1 << 62),
    ).fetchall()
    return [(p, s, t, bytes(d), c) for p, s, t, d, c in rows]
