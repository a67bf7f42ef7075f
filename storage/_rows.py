"""Typed rows read from the journal, and the queries that read them.

Shared by the runtime-facing :class:`~storage.Store` and the read-only
:class:`~storage.Journal`, so both see the file the same way.
"""

from __future__ import annotations

import contextlib
import typing
import weakref
from collections.abc import Iterator
from operator import itemgetter
from typing import Any
from zlib import crc32

import apsw

from errors import OutsideRetentionError

from ._contract import (
    STREAMED,
    ActorInfo,
    DeadLetter,
    Entry,
    EntryKind,
    EntryPreview,
    EventRow,
    HistorySize,
    Idempotent,
    Pending,
    Snapshot,
    SnapshotInfo,
    Space,
)
from ._errors import IntegrityError, UndecodableEntry
from ._payload_store import StoredValue, any_reference, chunk, resolve, resolve_rows
from ._payloads import MARK_BYTES, BadReference, is_reference
from ._preview import preview

TERMINAL_KINDS = (EntryKind.REPLY, EntryKind.FORK)
"""Entry kinds that close a step (a fork's first entry closes its source's history). A step without one is open."""
_KINDS: dict[str, EntryKind] = {kind.value: kind for kind in EntryKind}


_CRC: weakref.WeakKeyDictionary[apsw.Connection, str] = weakref.WeakKeyDictionary()


def _crc(conn: apsw.Connection) -> str:
    """``crc``, or ``NULL`` on a file from before schema version 5 (read-only, not migrated)."""
    column = _CRC.get(conn)
    if column is None:
        names = {row[1] for row in conn.execute("PRAGMA table_info(journal)")}
        column = _CRC[conn] = "crc" if "crc" in names else "NULL"
    return column


_FLOOR: weakref.WeakKeyDictionary[apsw.Connection, bool] = weakref.WeakKeyDictionary()


def _floor(conn: apsw.Connection, ident: str = "?") -> str:
    """The SQL for the floor of the actor whose id is ``ident``; ``0`` on a file from before schema version 8."""
    has = _FLOOR.get(conn)
    if has is None:
        has = _FLOOR[conn] = "floor" in {row[1] for row in conn.execute("PRAGMA table_info(actors)")}
    # Without the column the floor is 0, still taking the id's binding: one SQL text, one set of parameters.
    return f"(SELECT floor FROM actors WHERE actors.id = {ident})" if has else f"(0 * {ident})"


def _entry_columns(conn: apsw.Connection) -> str:
    return f"position, seq, step, kind, type, data, at, {_crc(conn)}"


def corrupt(what: str, position: int, type_name: str, seq: int | None = None) -> UndecodableEntry:
    """The error for a payload whose checksum does not match: it names where."""
    return UndecodableEntry(
        f"{what} at position {position} is corrupt: its data does not match its checksum "
        f"(it is not served; restore the journal from its replica, or check it with `python -m runtime check`)",
        position=position,
        type_name=type_name,
        seq=seq,
    )


def _entry(conn: apsw.Connection, address: str, row: tuple[Any, ...]) -> Entry:
    position, seq, step, kind, type_name, data, at, crc = row
    if data[:1] == MARK_BYTES:
        # A payload stored once: the row holds a reference, and the crc of the value it
        # refers to. Told by its first byte, never by a failed crc: a reference ends
        # with its own CRC-32, so the CRC-32 of every reference is the same constant,
        # and a value whose CRC-32 is that constant (easily made) would pass for one.
        data = _stored(conn, data, f"journal entry {address}#{seq}", position, type_name, seq)
    if crc is not None and crc32(data) != crc:
        raise corrupt(f"journal entry {address}#{seq}", position, type_name, seq)
    known = _KINDS.get(kind)  # a dict, not EntryKind(kind): this runs for every entry read
    if known is None:
        raise UndecodableEntry(
            f"journal entry {address}#{seq} at position {position} has an unknown kind {kind!r}",
            position=position,
            type_name=type_name,
            seq=seq,
        )
    return Entry(position, address, seq, step, known, type_name, data, at)


def _stored(conn: apsw.Connection, data: bytes, what: str, position: int, type_name: str, seq: int | None) -> bytes:
    """The value a journal row's reference names; a clear error naming the row if it cannot be read."""
    try:
        return resolve(conn, data)
    except BadReference as exc:
        raise UndecodableEntry(
            f"{what} at position {position} is corrupt: its payload cannot be read: {exc} "
            f"(it is not served; restore the journal from its replica, or check it with `python -m runtime check`)",
            position=position,
            type_name=type_name,
            seq=seq,
        ) from None


def _transient(conn: apsw.Connection, sql: str, params: tuple[Any, ...], columns: tuple[int, ...]) -> list[Any]:
    """Rows of a table whose rows are deleted (inbox, keys, promises, dead letters), references resolved.

    Rows and the chunks they name are read in one read transaction: a reclaim
    committed in between could otherwise take the chunks of a row just deleted.
    """
    rows = conn.execute(sql, params).fetchall()
    if not any_reference([row[i] for row in rows for i in columns]):
        return rows
    try:
        with conn:
            rows = resolve_rows(conn, conn.execute(sql, params).fetchall(), columns)
    except BadReference as exc:
        raise IntegrityError(
            f"a stored payload cannot be read: {exc} (check the journal: `python -m runtime check`)"
        ) from None
    return rows


def actor_id(conn: apsw.Connection, address: str) -> int | None:
    """The integer id journal rows use for ``address``."""
    row = conn.execute("SELECT id FROM actors WHERE address = ?", (address,)).fetchone()
    return int(row[0]) if row else None


def entries(
    conn: apsw.Connection, actor: int, address: str, from_seq: int = 0, kind: str | None = None
) -> Iterator[Entry]:
    """An actor's entries with ``seq >= from_seq`` (and at or above its floor) in order, optionally of one kind."""
    sql = f"SELECT {_entry_columns(conn)} FROM journal WHERE actor = ? AND seq >= max(?, {_floor(conn)})"
    params: tuple[Any, ...] = (actor, from_seq, actor)
    if kind is not None:
        sql += " AND kind = ?"
        params += (kind,)
    for row in conn.execute(sql + " ORDER BY seq", params):
        yield _entry(conn, address, row)


_STREAM_FILTER = (
    f"(kind IN ('{EntryKind.START}', '{EntryKind.CHUNK}') OR (kind IN ('{EntryKind.EFFECT}', '{EntryKind.ATTEMPT}') "
    f"AND substr(type, 1, {len(STREAMED)}) = '{STREAMED}'))"
)


def stream_entries(conn: apsw.Connection, actor: int, address: str, from_seq: int, limit: int) -> list[Entry]:
    """Up to ``limit`` entries of the actor's stream with ``seq >= from_seq``, in order.

    Read through the (actor, seq) index, the kind filtered row by row: no
    index of its own, which every journal write would pay for.
    """
    sql = f"SELECT {_entry_columns(conn)} FROM journal WHERE actor = ? AND seq >= ? AND {_STREAM_FILTER}"
    return [_entry(conn, address, row) for row in conn.execute(sql + " ORDER BY seq LIMIT ?", (actor, from_seq, limit))]


def open_step(conn: apsw.Connection, actor: int, address: str) -> list[Entry]:
    """The entries of the actor's interrupted step (message first), or [] if none.

    Reads the journal backwards from the end and stops at the first entry that
    closes a step, so it costs as many rows as the open step has.
    """
    tail: list[Entry] = []
    sql = f"SELECT {_entry_columns(conn)} FROM journal WHERE actor = ? ORDER BY seq DESC"
    for row in conn.execute(sql, (actor,)):
        entry = _entry(conn, address, row)
        if entry.kind in TERMINAL_KINDS:
            break
        tail.append(entry)
        if entry.kind == EntryKind.MESSAGE:
            break
    tail.reverse()
    return tail if tail and tail[0].kind == EntryKind.MESSAGE else []


def _actor_columns(conn: apsw.Connection) -> str:
    floor = "0" if _floor(conn).startswith("(0") else "floor"
    return (
        "id, address, type, (SELECT coalesce(max(seq), 0) FROM journal WHERE actor = id), "
        f"status, reason, updated, {floor}"
    )


def actor(conn: apsw.Connection, address: str) -> ActorInfo | None:
    """The registry row of one actor."""
    row = conn.execute(f"SELECT {_actor_columns(conn)} FROM actors WHERE address = ?", (address,)).fetchone()
    return ActorInfo(*row) if row else None


def actors(conn: apsw.Connection, type_name: str | None = None) -> list[ActorInfo]:
    """All registered actors (of one type), by address."""
    sql = f"SELECT {_actor_columns(conn)} FROM actors"
    params: tuple[Any, ...] = ()
    if type_name is not None:
        sql += " WHERE type = ?"
        params = (type_name,)
    return [ActorInfo(*row) for row in conn.execute(sql + " ORDER BY address", params)]


def snapshot(conn: apsw.Connection, actor: int, address: str, before: int | None = None) -> Snapshot | None:
    """The newest snapshot of the actor (with ``seq < before`` when given), not below its floor."""
    limit = before if before is not None else 1 << 62
    row = conn.execute(
        f"SELECT seq, type, data, at, {_crc(conn)} FROM snapshots "
        f"WHERE actor = ? AND seq < ? AND seq >= {_floor(conn)} ORDER BY seq DESC LIMIT 1",
        (actor, limit, actor),
    ).fetchone()
    if row is None:
        return None
    seq, type_name, data, at, crc = row
    if is_reference(data):
        # Unreadable, it is left as stored: it fails its checksum, and a rebuild falls back to older history (G5).
        with contextlib.suppress(BadReference):
            data = resolve(conn, data)
    return Snapshot(address, seq, type_name, data, at, crc)


def snapshots(conn: apsw.Connection, actor: int) -> list[SnapshotInfo]:
    """Every snapshot of the actor from its floor on, oldest first."""
    sql = f"SELECT seq, at FROM snapshots WHERE actor = ? AND seq >= {_floor(conn)} ORDER BY seq"
    return [SnapshotInfo(*row) for row in conn.execute(sql, (actor, actor))]


def pending(conn: apsw.Connection) -> list[Pending]:
    """Every pending inbox message, in step-id order."""
    sql = (
        "SELECT id, target, handler, type, payload, due, idempotency_key, attempts, sender, at, "
        "timer_id, reply_to, reply_name FROM inbox ORDER BY id"
    )
    return [Pending(*row) for row in _transient(conn, sql, (), (4,))]


def idempotent(conn: apsw.Connection, key: str) -> Idempotent | None:
    """The record of an idempotency key, if it was used."""
    sql = "SELECT key, address, step, reply, at, kind, handler FROM idempotency WHERE key = ?"
    rows = _transient(conn, sql, (key,), (3,))
    return Idempotent(*rows[0]) if rows else None


def expired_keys(conn: apsw.Connection, cutoff: float, limit: int) -> list[str]:
    """Up to ``limit`` idempotency keys recorded before ``cutoff``, oldest first."""
    return [
        str(row[0])
        for row in conn.execute("SELECT key FROM idempotency WHERE at < ? ORDER BY at LIMIT ?", (cutoff, limit))
    ]


def key_status(conn: apsw.Connection, key: str, step: int) -> tuple[Idempotent | None, bool]:
    """An idempotency key's record, and whether its step's message is still in the inbox.

    Read in one transaction: a step records its reply and consumes its
    message in one commit, so the two answers always agree.
    """
    with conn:
        record = idempotent(conn, key)
        pending = conn.execute("SELECT 1 FROM inbox WHERE id = ?", (step,)).fetchone() is not None
    return record, pending


def promise(conn: apsw.Connection, address: str, name: str) -> bytes | None:
    """A resolved value waiting for ``address`` under ``name``, if any."""
    rows = _transient(conn, "SELECT value FROM promises WHERE address = ? AND name = ?", (address, name), (0,))
    return bytes(rows[0][0]) if rows else None


def dead_letters(conn: apsw.Connection) -> list[DeadLetter]:
    """Every dead letter, oldest first."""
    sql = "SELECT id, target, handler, type, payload, sender, attempts, reason, at FROM dead_letters ORDER BY id"
    return [DeadLetter(*row) for row in _transient(conn, sql, (), (4,))]


def meta(conn: apsw.Connection, key: str) -> Any:
    """A value from the meta table, or None."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def seq_at(conn: apsw.Connection, actor: int, position: int, address: str = "") -> int:
    """The actor's last sequence number at journal ``position`` (0 if none yet).

    Positions and sequence numbers grow together, so a binary search over the
    (actor, seq) index finds it in about log2(n) point reads. A position
    before the entry at the actor's floor raises :class:`OutsideRetentionError`.
    """
    (last,) = conn.execute("SELECT coalesce(max(seq), 0) FROM journal WHERE actor = ?", (actor,)).fetchone() or (0,)
    (floor,) = conn.execute(f"SELECT {_floor(conn)}", (actor,)).fetchone() or (0,)
    lo = int(floor or 0)
    if lo:
        earliest = conn.execute(
            "SELECT min(position) FROM journal WHERE actor = ? AND seq >= ?", (actor, lo)
        ).fetchone()
        first = int(earliest[0]) if earliest and earliest[0] is not None else position
        if position < first:
            raise OutsideRetentionError(address or f"actor {actor}", first, lo, position=position)
    hi = int(last)  # invariant: position(lo) <= position < position(hi + 1)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        row = conn.execute("SELECT position FROM journal WHERE actor = ? AND seq = ?", (actor, mid)).fetchone()
        if row is not None and row[0] <= position:
            lo = mid
        else:
            hi = mid - 1
    return lo


def event_rows(conn: apsw.Connection, actor: int, after_seq: int, until_seq: int | None = None) -> list[EventRow]:
    """``(position, seq, type, data, crc)`` of an actor's events after ``after_seq``.

    The hot path of activation: SQLite filters the kind in C, so only event
    rows reach Python, and the checksum is checked in the loop that decodes.
    """
    rows = typing.cast(
        "list[EventRow]",
        conn.execute(
            f"SELECT position, seq, type, data, {_crc(conn)} FROM journal "
            f"WHERE actor = ? AND seq > max(?, {_floor(conn)}) AND seq <= ? AND kind = 'event' ORDER BY seq",
            (actor, after_seq, actor, until_seq if until_seq is not None else 1 << 62),
        ).fetchall(),
    )
    if not _floor(conn).startswith("(0"):  # a file from before floors has none
        # Read after the rows: a floor only moves up, so one that moved above
        # after_seq before the rows were read is seen here too.
        (floor,) = conn.execute(f"SELECT {_floor(conn)}", (actor,)).fetchone() or (0,)
        if floor and after_seq < floor:
            raise OutsideRetentionError(
                f"actor {actor}", _position_of(conn, actor, int(floor)), int(floor), seq=after_seq
            )
    if MARK_BYTES in map(_FIRST_BYTE, map(_DATA, rows)):  # one pass in C: is any a reference?
        rows = [_event_resolved(conn, row) if is_reference(row[3]) else row for row in rows]
    return rows


def _position_of(conn: apsw.Connection, actor: int, seq: int) -> int:
    row = conn.execute("SELECT min(position) FROM journal WHERE actor = ? AND seq >= ?", (actor, seq)).fetchone()
    return int(row[0]) if row and row[0] is not None else -1


def history_size(conn: apsw.Connection, address: str) -> HistorySize | None:
    """What one actor's history takes (None: no such actor)."""
    ident = actor_id(conn, address)
    if ident is None:
        return None
    count, size = conn.execute(
        "SELECT count(*), sum(length(data)) FROM journal WHERE actor = ?", (ident,)
    ).fetchone() or (0, 0)
    snaps, snap_size = conn.execute(
        "SELECT count(*), sum(length(data)) FROM snapshots WHERE actor = ?", (ident,)
    ).fetchone() or (0, 0)
    (floor,) = conn.execute(f"SELECT {_floor(conn)}", (ident,)).fetchone() or (0,)
    return HistorySize(address, int(count), int(size or 0), int(snaps), int(snap_size or 0), int(floor or 0))


def history_sizes(conn: apsw.Connection) -> list[HistorySize]:
    """What each actor's history takes, by address: one pass over the journal and one over the snapshots."""
    with conn:  # one snapshot of the file for the three reads
        entries = {
            int(actor): (int(count), int(size or 0))
            for actor, count, size in conn.execute(
                "SELECT actor, count(*), sum(length(data)) FROM journal GROUP BY actor"
            )
        }
        snaps = {
            int(actor): (int(count), int(size or 0))
            for actor, count, size in conn.execute(
                "SELECT actor, count(*), sum(length(data)) FROM snapshots GROUP BY actor"
            )
        }
        floor = "0" if _floor(conn).startswith("(0") else "floor"
        registry: list[tuple[int, str, int]] = typing.cast(
            "list[tuple[int, str, int]]",
            conn.execute(f"SELECT id, address, {floor} FROM actors ORDER BY address").fetchall(),
        )
    return [
        HistorySize(address, *entries.get(ident, (0, 0)), *snaps.get(ident, (0, 0)), floor=low)
        for ident, address, low in registry
    ]


def lowest_seq(conn: apsw.Connection, actor: int) -> int | None:
    """The lowest seq stored for the actor, below its floor included (where compaction goes on from)."""
    row = conn.execute("SELECT min(seq) FROM journal WHERE actor = ?", (actor,)).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def space(conn: apsw.Connection) -> Space:
    """The file's pages, its free pages, and whether it can give them back (auto_vacuum=INCREMENTAL)."""

    def pragma(name: str) -> int:
        row = conn.execute(f"PRAGMA {name}").fetchone()
        return int(row[0]) if row else 0

    size = pragma("page_size")
    return Space(pragma("page_count") * size, pragma("freelist_count") * size, pragma("auto_vacuum") == 2, size)


_DATA = itemgetter(3)
_FIRST_BYTE = itemgetter(slice(0, 1))


def _event_resolved(conn: apsw.Connection, row: EventRow) -> EventRow:
    try:
        return (*row[:3], resolve(conn, row[3]), row[4])
    except BadReference:
        return row  # as stored: it fails its checksum where it is decoded, an error naming its position


PAGE_READ_MAX = 4 * 1024 * 1024
"""Bytes of payload one page of previews reads at most (it holds at least one entry)."""


def previews(
    conn: apsw.Connection, actor: int, address: str, from_seq: int, kind: str | None, limit: int
) -> list[EntryPreview]:
    """Up to ``limit`` entries from ``from_seq``, each decoded with long parts cut short (bounded reads)."""
    sql = f"SELECT {_entry_columns(conn)} FROM journal WHERE actor = ? AND seq >= ?"
    params: tuple[Any, ...] = (actor, from_seq)
    if kind is not None:
        sql += " AND kind = ?"
        params += (kind,)
    out: list[EntryPreview] = []
    budget = PAGE_READ_MAX
    with conn:  # the rows and the chunks they name: one read transaction
        for position, seq, step, kind_name, type_name, data, at, crc in conn.execute(
            sql + " ORDER BY seq LIMIT ?", (*params, limit)
        ):
            what = f"journal entry {address}#{seq}"
            try:
                value = StoredValue(data, lambda ident, length: chunk(conn, ident, length))
                if not value.reference and crc is not None and crc32(data) != crc:
                    raise corrupt(what, position, type_name, seq)
                decoded, truncated, read = preview(value)
            except BadReference as exc:
                raise UndecodableEntry(
                    f"{what} at position {position} is corrupt: its payload cannot be read: {exc}",
                    position=position,
                    type_name=type_name,
                    seq=seq,
                ) from None
            out.append(
                EntryPreview(
                    position, address, seq, step, kind_name, type_name, at, value.size, value.reference, truncated,
                    decoded,
                )
            )  # fmt: skip
            budget -= read
            if budget <= 0:
                break  # a page of many large entries ends early; the next page goes on from there
    return out


def entry_value(conn: apsw.Connection, actor: int, seq: int) -> bytes | None:
    """One entry's data as stored (a reference or the value itself), or None."""
    row = conn.execute("SELECT data FROM journal WHERE actor = ? AND seq = ?", (actor, seq)).fetchone()
    return bytes(row[0]) if row else None
