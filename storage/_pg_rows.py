"""Typed rows read from a PostgreSQL journal, and the queries that read them.

The same answers as :mod:`storage._rows` gives on SQLite (the conformance suite
checks both), one statement per answer: every read is one round trip and sees
one snapshot of the database.
"""

from __future__ import annotations

from typing import Any
from zlib import crc32

import psycopg

from errors import OutsideRetentionError

from ._contract import (
    STREAMED,
    ActorInfo,
    DeadLetter,
    Entry,
    EntryKind,
    EventRow,
    HistorySize,
    Idempotent,
    Pending,
    Snapshot,
    SnapshotInfo,
    Space,
)
from ._errors import UndecodableEntry
from ._rows import TERMINAL_KINDS, corrupt

Conn = psycopg.Connection[Any]

PAGE = 1000
"""Rows per round trip when an actor's history is streamed."""

_ENTRY = "position, seq, step, kind, type, data, at, crc"

_FLOOR = "(SELECT floor FROM actors WHERE actors.id = %s)"
"""The floor of the actor whose id is bound (see :attr:`ActorInfo.floor`): reads serve nothing below it."""


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
            f"SELECT {_ENTRY} FROM journal WHERE actor = %s AND seq >= GREATEST(%s, {_FLOOR}) ORDER BY seq LIMIT %s",
            (actor, from_seq, actor, limit),
        ).fetchall()
    else:
        rows = conn.execute(
            f"SELECT {_ENTRY} FROM journal WHERE actor = %s AND seq >= GREATEST(%s, {_FLOOR}) AND kind = %s "
            "ORDER BY seq LIMIT %s",
            (actor, from_seq, actor, kind, limit),
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
    "status, reason, updated, floor"
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
        f"SELECT seq, type, data, at, crc FROM snapshots WHERE actor = %s AND seq < %s AND seq >= {_FLOOR} "
        "ORDER BY seq DESC LIMIT 1",
        (actor, before if before is not None else 1 << 62, actor),
    ).fetchone()
    if row is None:
        return None
    seq, type_name, data, at, crc = row
    return Snapshot(address, seq, type_name, bytes(data), at, crc)


def snapshots(conn: Conn, actor: int) -> list[SnapshotInfo]:
    """Every snapshot of the actor, oldest first."""
    rows = conn.execute(
        f"SELECT seq, at FROM snapshots WHERE actor = %s AND seq >= {_FLOOR} ORDER BY seq", (actor, actor)
    ).fetchall()
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


def seq_at(conn: Conn, actor: int, position: int, address: str = "") -> int:
    """The actor's last sequence number at journal ``position`` (0 if none yet).

    A position before the entry at the actor's floor raises :class:`OutsideRetentionError`.
    """
    row = conn.execute(
        "SELECT a.floor, (SELECT min(position) FROM journal WHERE actor = a.id AND seq >= a.floor), "
        "(SELECT coalesce(max(seq), 0) FROM journal WHERE actor = a.id AND position <= %s) "
        "FROM actors AS a WHERE a.id = %s",
        (position, actor),
    ).fetchone()
    if row is None:
        return 0
    floor, earliest, seq = int(row[0]), row[1], int(row[2])
    if floor and earliest is not None and position < int(earliest):
        raise OutsideRetentionError(address or f"actor {actor}", int(earliest), floor, position=position)
    return seq


def event_rows(conn: Conn, actor: int, after_seq: int, until_seq: int | None = None) -> list[EventRow]:
    """``(position, seq, type, data, crc)`` of an actor's events after ``after_seq``."""
    rows = conn.execute(
        "SELECT position, seq, type, data, crc FROM journal "
        f"WHERE actor = %s AND seq > GREATEST(%s, {_FLOOR}) AND seq <= %s AND kind = 'event' ORDER BY seq",
        (actor, after_seq, actor, until_seq if until_seq is not None else 1 << 62),
    ).fetchall()
    # Read after the rows: a floor only moves up, so one that moved above after_seq
    # before the rows were read is seen here too (a state is never folded over a hole).
    floor_row = conn.execute(
        "SELECT floor, (SELECT min(position) FROM journal WHERE actor = actors.id AND seq >= actors.floor) "
        "FROM actors WHERE id = %s",
        (actor,),
    ).fetchone()
    if floor_row is not None and floor_row[0] and after_seq < int(floor_row[0]):
        earliest = int(floor_row[1]) if floor_row[1] is not None else -1
        raise OutsideRetentionError(f"actor {actor}", earliest, int(floor_row[0]), seq=after_seq)
    return [(p, s, t, bytes(d), c) for p, s, t, d, c in rows]


_SIZES = (
    "SELECT a.address, coalesce(j.n, 0), coalesce(j.b, 0), coalesce(s.n, 0), coalesce(s.b, 0), a.floor "
    "FROM actors AS a "
    "LEFT JOIN (SELECT actor, count(*) AS n, sum(octet_length(data)) AS b FROM journal GROUP BY actor) AS j "
    "ON j.actor = a.id "
    "LEFT JOIN (SELECT actor, count(*) AS n, sum(octet_length(data)) AS b FROM snapshots GROUP BY actor) AS s "
    "ON s.actor = a.id"
)


def _size(row: tuple[Any, ...]) -> HistorySize:
    address, entries, size, snaps, snap_size, floor = row
    return HistorySize(str(address), int(entries), int(size), int(snaps), int(snap_size), int(floor))


def history_sizes(conn: Conn) -> list[HistorySize]:
    """What each actor's history takes, by address: one statement, one snapshot."""
    return [_size(row) for row in conn.execute(f'{_SIZES} ORDER BY a.address COLLATE "C"').fetchall()]


def history_size(conn: Conn, address: str) -> HistorySize | None:
    """What one actor's history takes (None: no such actor)."""
    row = conn.execute(
        "SELECT a.address, "
        "(SELECT count(*) FROM journal WHERE actor = a.id), "
        "(SELECT coalesce(sum(octet_length(data)), 0) FROM journal WHERE actor = a.id), "
        "(SELECT count(*) FROM snapshots WHERE actor = a.id), "
        "(SELECT coalesce(sum(octet_length(data)), 0) FROM snapshots WHERE actor = a.id), a.floor "
        "FROM actors AS a WHERE a.address = %s",
        (address,),
    ).fetchone()
    return _size(row) if row else None


def lowest_seq(conn: Conn, address: str) -> int | None:
    """The lowest seq stored for the actor, below its floor included (where compaction goes on from)."""
    row = conn.execute(
        "SELECT min(seq) FROM journal WHERE actor = (SELECT id FROM actors WHERE address = %s)", (address,)
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def space(conn: Conn, tables: tuple[str, ...]) -> Space:
    """What the journal's tables take on the server; PostgreSQL reuses deleted rows' room itself (autovacuum)
    and gives none back without rewriting a table, so nothing is counted as free or reclaimable."""
    row = conn.execute(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
        "WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema()) "
        "AND c.relkind = 'r' AND c.relname = ANY(%s)",
        (list(tables),),
    ).fetchone()
    return Space(int(row[0]) if row else 0, 0, False, 0)
