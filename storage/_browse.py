"""Browsing a journal: pages of actors and of entries, fast at any size.

What the console reads. Every query here walks an index from a cursor and
stops after a page: an overview of 100,000 actors and a page deep inside an
actor's 1,000,000 entries cost the same few index seeks as the first page.
The inbox and the dead letters have no index by target (writing one would
cost every message a second B-tree write), so a page reads each once, whole;
both are bounded by the runtime's limits and usually small.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import apsw

from ._contract import (
    ACTOR_FILTERS,
    ActorCondition,
    ActorDetail,
    ActorPage,
    ActorStatus,
    ActorSummary,
    DeadLetter,
    Entry,
    EntryKind,
    JournalSummary,
    Pending,
    ResolvedPromise,
)
from ._rows import _entry, _entry_columns, _transient

MAX_TYPES = 1000
"""The most actor types a summary lists."""


def entries_page(
    conn: apsw.Connection,
    actor: int,
    address: str,
    after_seq: int | None = None,
    before_seq: int | None = None,
    limit: int = 100,
) -> list[Entry]:
    """Up to ``limit`` entries after ``after_seq``, else the last ones before ``before_seq``; oldest first."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    columns = _entry_columns(conn)
    if after_seq is not None:
        sql = f"SELECT {columns} FROM journal WHERE actor = ? AND seq > ? ORDER BY seq LIMIT ?"
        rows = conn.execute(sql, (actor, after_seq, limit)).fetchall()
    else:
        top = before_seq if before_seq is not None else 1 << 62
        sql = f"SELECT {columns} FROM journal WHERE actor = ? AND seq < ? ORDER BY seq DESC LIMIT ?"
        rows = conn.execute(sql, (actor, top, limit)).fetchall()
        rows.reverse()
    return [_entry(conn, address, row) for row in rows]


def entry(conn: apsw.Connection, position: int) -> Entry | None:
    """The entry at ``position``."""
    row = conn.execute(f"SELECT actor, {_entry_columns(conn)} FROM journal WHERE position = ?", (position,)).fetchone()
    if row is None:
        return None
    address = conn.execute("SELECT address FROM actors WHERE id = ?", (row[0],)).fetchone()
    return _entry(conn, str(address[0]) if address else f"#{row[0]}", row[1:])


def summary(conn: apsw.Connection) -> JournalSummary:
    """The journal at a glance."""
    (actors,) = conn.execute("SELECT count(*) FROM actors").fetchone() or (0,)
    (last,) = conn.execute("SELECT coalesce(max(position), 0) FROM journal").fetchone() or (0,)
    pending, timers = conn.execute(
        "SELECT coalesce(sum(timer_id IS NULL), 0), coalesce(sum(timer_id IS NOT NULL), 0) FROM inbox"
    ).fetchone() or (0, 0)
    (letters,) = conn.execute("SELECT count(*) FROM dead_letters").fetchone() or (0,)
    (suspended,) = conn.execute(
        "SELECT count(*) FROM actors WHERE status = ?", (ActorStatus.SUSPENDED.value,)
    ).fetchone() or (0,)
    return JournalSummary(int(actors), types(conn), int(last), int(pending), int(timers), int(letters), int(suspended))


def types(conn: apsw.Connection) -> list[str]:
    """The actor types, by skipping through the address index one type at a time.

    An address is ``TYPE/key`` and a type holds no ``/``: every address of
    ``TYPE`` sorts before ``TYPE0`` (``0`` follows ``/``), so one seek per
    type finds them all, however many actors each has.
    """
    found: list[str] = []
    cursor = ""
    while len(found) < MAX_TYPES:
        row = conn.execute("SELECT type FROM actors WHERE address >= ? ORDER BY address LIMIT 1", (cursor,)).fetchone()
        if row is None:
            break
        name = str(row[0])
        if not found or found[-1] != name:
            found.append(name)
        cursor = name + "0"
    return sorted(set(found))


def _like(text: str) -> str:
    """``text`` as a LIKE pattern that matches it anywhere, its own wildcards escaped."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


_PENDING = "address IN (SELECT target FROM inbox WHERE timer_id IS NULL)"
# An open step: the actor's last entry does not close a step, and its message
# (a timer's too) is still in the inbox. Found from the inbox's targets, so it
# costs a few index seeks per actor with something pending, not per actor: the
# CROSS JOIN keeps SQLite from scanning every actor instead (measured: 290 ms
# for an idle filter over 100,000 actors with an empty inbox; 2 ms with it).
_WAITING = """address IN (
    SELECT a.address FROM (SELECT DISTINCT target FROM inbox) AS busy CROSS JOIN actors AS a ON a.address = busy.target
    WHERE a.status <> 'suspended' AND EXISTS (
        SELECT 1 FROM journal AS l
        WHERE l.actor = a.id AND l.seq = (SELECT max(seq) FROM journal WHERE actor = a.id)
        AND l.kind <> 'reply' AND EXISTS (SELECT 1 FROM inbox WHERE id = l.step)))"""
_CONDITIONS = {
    ActorCondition.SUSPENDED: "status = 'suspended'",
    ActorCondition.WAITING: _WAITING,
    ActorCondition.ACTIVE: f"status <> 'suspended' AND {_PENDING} AND NOT {_WAITING}",
    ActorCondition.IDLE: f"status <> 'suspended' AND NOT {_PENDING} AND NOT {_WAITING}",
    "dead_letters": "address IN (SELECT target FROM dead_letters)",
}
"""Each filter in SQL; :func:`condition_of` says the same of one actor."""


def _where(type_name: str | None, search: str | None, condition: str | None) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if type_name:
        # The address index does the work: every address of a type sorts in [TYPE/, TYPE0).
        clauses.append("address >= ? AND address < ? AND type = ?")
        params += [type_name + "/", type_name + "0", type_name]
    if search:
        clauses.append("substr(address, length(type) + 2) LIKE ? ESCAPE '\\'")
        params.append(_like(search))
    if condition is not None:
        clause = _CONDITIONS.get(condition)
        if clause is None:
            raise ValueError(f"condition must be one of {', '.join(ACTOR_FILTERS)}, not {condition!r}")
        clauses.append(clause)
    return clauses, params


def actor_page(
    conn: apsw.Connection,
    *,
    after: str | None = None,
    before: str | None = None,
    limit: int = 50,
    type_name: str | None = None,
    search: str | None = None,
    condition: str | None = None,
) -> ActorPage:
    """A page of actors in address order (see :meth:`storage.Reads.actor_page`)."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    if after is not None and before is not None:
        raise ValueError("give after or before, not both")
    clauses, params = _where(type_name, search, condition)
    backwards = before is not None
    rows = _registry_rows(conn, clauses, params, before if backwards else after, backwards, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    if backwards:
        rows.reverse()
    if not rows:
        return ActorPage([], None, None)
    first, last = str(rows[0][1]), str(rows[-1][1])
    if backwards:
        previous = first if more else None
        following = last if _registry_rows(conn, clauses, params, last, False, 1) else None
    else:
        following = last if more else None
        earlier = after is not None and bool(_registry_rows(conn, clauses, params, first, True, 1))
        previous = first if earlier else None
    return ActorPage(summaries(conn, rows), previous, following)


def _registry_rows(
    conn: apsw.Connection, clauses: list[str], params: list[Any], cursor: str | None, backwards: bool, limit: int
) -> list[tuple[Any, ...]]:
    """Up to ``limit`` registry rows matching ``clauses`` from ``cursor`` on, walking the address index."""
    where = list(clauses)
    args = list(params)
    if cursor is not None:
        where.append("address < ?" if backwards else "address > ?")
        args.append(cursor)
    sql = "SELECT id, address, type, status, reason, updated FROM actors"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY address {'DESC' if backwards else 'ASC'} LIMIT ?"
    return conn.execute(sql, (*args, limit)).fetchall()


def summaries(conn: apsw.Connection, rows: Iterable[tuple[Any, ...]]) -> list[ActorSummary]:
    """Summaries of registry rows ``(id, address, type, status, reason, updated)``."""
    rows = list(rows)
    if not rows:
        return []
    addresses = [row[1] for row in rows]
    marks = ", ".join("?" * len(addresses))
    waiting = {
        str(target): (int(messages), int(timers))
        for target, messages, timers in conn.execute(
            f"SELECT target, sum(timer_id IS NULL), sum(timer_id IS NOT NULL) FROM inbox "
            f"WHERE target IN ({marks}) GROUP BY target",
            addresses,
        )
    }
    letters = {
        str(target): int(n)
        for target, n in conn.execute(
            f"SELECT target, count(*) FROM dead_letters WHERE target IN ({marks}) GROUP BY target", addresses
        )
    }
    made = []
    for ident, address, type_name, status, reason, updated in rows:
        last = conn.execute(
            "SELECT seq, at, kind, step FROM journal WHERE actor = ? ORDER BY seq DESC LIMIT 1", (ident,)
        ).fetchone()
        seq, at, kind, step = last if last is not None else (0, None, None, None)
        messages, timers = waiting.get(address, (0, 0))
        open_step = (
            kind is not None
            and kind != EntryKind.REPLY
            and conn.execute("SELECT 1 FROM inbox WHERE id = ?", (step,)).fetchone() is not None
        )
        made.append(
            ActorSummary(
                address,
                type_name,
                condition_of(status, open_step, messages).value,
                status,
                reason,
                int(seq),
                at,
                kind,
                step,
                messages,
                timers,
                letters.get(address, 0),
                updated,
            )
        )
    return made


def condition_of(status: str, open_step: bool, pending: int) -> ActorCondition:
    """What an actor is doing: suspended, else waiting in an open step, else active with messages, else idle.

    A step is open when the actor's last entry does not close one and its
    message is still in the inbox (a step whose message became a dead letter
    is over, though it never replied).
    """
    if status == ActorStatus.SUSPENDED:
        return ActorCondition.SUSPENDED
    if open_step:
        return ActorCondition.WAITING
    return ActorCondition.ACTIVE if pending else ActorCondition.IDLE


def actor_detail(conn: apsw.Connection, address: str, limit: int = 100) -> ActorDetail | None:
    """One actor's summary and what waits for it."""
    row = conn.execute(
        "SELECT id, address, type, status, reason, updated FROM actors WHERE address = ?", (address,)
    ).fetchone()
    if row is None:
        return None
    (made,) = summaries(conn, [row])
    # Payloads stored once are read as their values, rows and chunks in one read transaction.
    pending = [
        Pending(*r)
        for r in _transient(
            conn,
            "SELECT id, target, handler, type, payload, due, idempotency_key, attempts, sender, at, "
            "timer_id, reply_to, reply_name FROM inbox WHERE target = ? ORDER BY id LIMIT ?",
            (address, limit),
            (4,),
        )
    ]
    letters = [
        DeadLetter(*r)
        for r in _transient(
            conn,
            "SELECT id, target, handler, type, payload, sender, attempts, reason, at FROM dead_letters "
            "WHERE target = ? ORDER BY id",
            (address,),
            (4,),
        )
    ]
    promises = [
        ResolvedPromise(str(name), bytes(value), float(at))
        for name, value, at in _transient(
            conn, "SELECT name, value, at FROM promises WHERE address = ? ORDER BY name", (address,), (1,)
        )
    ]
    return ActorDetail(made, pending, letters, promises)
