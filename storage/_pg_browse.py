"""Browsing a PostgreSQL journal: the console's pages of actors and entries.

The same answers as :mod:`storage._browse` gives on SQLite (``tests/storage``
checks both), with the same shape: every page walks an index from a cursor and
stops after a page. Addresses are ``COLLATE "C"`` in the schema, so they sort
byte by byte as SQLite sorts them, and ``TYPE/`` .. ``TYPE0`` bounds one type.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg

from ._browse import MAX_TYPES, _like, condition_of
from ._contract import (
    ACTOR_FILTERS,
    ActorCondition,
    ActorDetail,
    ActorPage,
    ActorStatus,
    ActorSummary,
    DeadLetter,
    Entry,
    JournalSummary,
    Pending,
    ResolvedPromise,
)
from ._pg_rows import _ENTRY, _entry

Conn = psycopg.Connection[Any]


def entries_page(
    conn: Conn,
    actor: int,
    address: str,
    after_seq: int | None = None,
    before_seq: int | None = None,
    limit: int = 100,
) -> list[Entry]:
    """Up to ``limit`` entries after ``after_seq``, else the last ones before ``before_seq``; oldest first."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    if after_seq is not None:
        sql = f"SELECT {_ENTRY} FROM journal WHERE actor = %s AND seq > %s ORDER BY seq LIMIT %s"
        rows = conn.execute(sql, (actor, after_seq, limit)).fetchall()
    else:
        top = before_seq if before_seq is not None else 1 << 62
        sql = f"SELECT {_ENTRY} FROM journal WHERE actor = %s AND seq < %s ORDER BY seq DESC LIMIT %s"
        rows = conn.execute(sql, (actor, top, limit)).fetchall()
        rows.reverse()
    return [_entry(address, row) for row in rows]


def entry(conn: Conn, position: int) -> Entry | None:
    """The entry at ``position``."""
    row = conn.execute(
        f"SELECT coalesce(a.address, '#' || j.actor), {', '.join('j.' + c for c in _ENTRY.split(', '))} "
        "FROM journal AS j LEFT JOIN actors AS a ON a.id = j.actor WHERE j.position = %s",
        (position,),
    ).fetchone()
    return _entry(str(row[0]), row[1:]) if row is not None else None


def summary(conn: Conn) -> JournalSummary:
    """The journal at a glance, in one round trip."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM actors), (SELECT coalesce(max(position), 0) FROM journal), "
        "(SELECT count(*) FILTER (WHERE timer_id IS NULL) FROM inbox), "
        "(SELECT count(*) FILTER (WHERE timer_id IS NOT NULL) FROM inbox), "
        "(SELECT count(*) FROM dead_letters), (SELECT count(*) FROM actors WHERE status = %s)",
        (ActorStatus.SUSPENDED.value,),
    ).fetchone()
    actors, last, pending, timers, letters, suspended = row if row is not None else (0, 0, 0, 0, 0, 0)
    return JournalSummary(int(actors), types(conn), int(last), int(pending), int(timers), int(letters), int(suspended))


def types(conn: Conn) -> list[str]:
    """The actor types, one index seek per type (a recursive skip scan over the address index).

    Every address of ``TYPE`` sorts before ``TYPE0`` (``0`` follows ``/``).
    """
    rows = conn.execute(
        """WITH RECURSIVE t(type, n) AS (
            (SELECT type, 1 FROM actors ORDER BY address LIMIT 1)
            UNION ALL
            SELECT (SELECT a.type FROM actors AS a WHERE a.address >= t.type || '0' ORDER BY a.address LIMIT 1),
                   t.n + 1
            FROM t WHERE t.type IS NOT NULL AND t.n < %s
        ) SELECT DISTINCT type FROM t WHERE type IS NOT NULL""",
        (MAX_TYPES,),
    ).fetchall()
    return sorted(str(r[0]) for r in rows)


_PENDING = "address IN (SELECT target FROM inbox WHERE timer_id IS NULL)"
# An open step: the actor's last entry does not close a step, and its message
# (a timer's too) is still in the inbox; found from the inbox's targets.
_WAITING = """address IN (
    SELECT a.address FROM (SELECT DISTINCT target FROM inbox) AS busy JOIN actors AS a ON a.address = busy.target
    WHERE a.status <> 'suspended' AND EXISTS (
        SELECT 1 FROM (SELECT kind, step FROM journal WHERE actor = a.id ORDER BY seq DESC LIMIT 1) AS l
        WHERE l.kind <> 'reply' AND EXISTS (SELECT 1 FROM inbox WHERE id = l.step)))"""
_CONDITIONS = {
    ActorCondition.SUSPENDED: "status = 'suspended'",
    ActorCondition.WAITING: _WAITING,
    ActorCondition.ACTIVE: f"status <> 'suspended' AND {_PENDING} AND NOT {_WAITING}",
    ActorCondition.IDLE: f"status <> 'suspended' AND NOT {_PENDING} AND NOT {_WAITING}",
    "dead_letters": "address IN (SELECT target FROM dead_letters)",
}
"""Each filter in SQL; :func:`storage._browse.condition_of` says the same of one actor."""


def _where(type_name: str | None, search: str | None, condition: str | None) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if type_name:
        clauses.append("address >= %s AND address < %s AND type = %s")
        params += [type_name + "/", type_name + "0", type_name]
    if search:
        # ILIKE folds case as SQLite's LIKE does for ASCII (and PostgreSQL's for the rest too).
        clauses.append("substr(address, length(type) + 2) ILIKE %s ESCAPE '\\'")
        params.append(_like(search))
    if condition is not None:
        clause = _CONDITIONS.get(condition)
        if clause is None:
            raise ValueError(f"condition must be one of {', '.join(ACTOR_FILTERS)}, not {condition!r}")
        clauses.append(clause)
    return clauses, params


def actor_page(
    conn: Conn,
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
    conn: Conn, clauses: list[str], params: list[Any], cursor: str | None, backwards: bool, limit: int
) -> list[tuple[Any, ...]]:
    where = list(clauses)
    args = list(params)
    if cursor is not None:
        where.append("address < %s" if backwards else "address > %s")
        args.append(cursor)
    sql = "SELECT id, address, type, status, reason, updated FROM actors"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY address {'DESC' if backwards else 'ASC'} LIMIT %s"
    return conn.execute(sql, (*args, limit)).fetchall()


def summaries(conn: Conn, rows: Iterable[tuple[Any, ...]]) -> list[ActorSummary]:
    """Summaries of registry rows ``(id, address, type, status, reason, updated)``, in one round trip."""
    rows = list(rows)
    if not rows:
        return []
    facts = {
        int(r[0]): r[1:]
        for r in conn.execute(
            """SELECT a.id, l.seq, l.at, l.kind, l.step,
                   (l.step IS NOT NULL AND l.kind <> 'reply' AND EXISTS (SELECT 1 FROM inbox WHERE id = l.step)),
                   (SELECT count(*) FROM inbox WHERE target = a.address AND timer_id IS NULL),
                   (SELECT count(*) FROM inbox WHERE target = a.address AND timer_id IS NOT NULL),
                   (SELECT count(*) FROM dead_letters WHERE target = a.address)
            FROM unnest(%s::bigint[], %s::text[]) AS a(id, address)
            LEFT JOIN LATERAL (SELECT seq, at, kind, step FROM journal WHERE actor = a.id ORDER BY seq DESC LIMIT 1)
                AS l ON true""",
            ([int(r[0]) for r in rows], [str(r[1]) for r in rows]),
        )
    }
    made = []
    for ident, address, type_name, status, reason, updated in rows:
        seq, at, kind, step, open_step, messages, timers, letters = facts[int(ident)]
        made.append(
            ActorSummary(
                address,
                type_name,
                condition_of(status, bool(open_step), int(messages)).value,
                status,
                reason,
                int(seq or 0),
                at,
                kind,
                step,
                int(messages),
                int(timers),
                int(letters),
                updated,
            )
        )
    return made


def actor_detail(conn: Conn, address: str, limit: int = 100) -> ActorDetail | None:
    """One actor's summary and what waits for it."""
    row = conn.execute(
        "SELECT id, address, type, status, reason, updated FROM actors WHERE address = %s", (address,)
    ).fetchone()
    if row is None:
        return None
    (made,) = summaries(conn, [row])
    pending = [
        Pending(*r)
        for r in conn.execute(
            "SELECT id, target, handler, type, payload, due, idempotency_key, attempts, sender, at, "
            "timer_id, reply_to, reply_name FROM inbox WHERE target = %s ORDER BY id LIMIT %s",
            (address, limit),
        )
    ]
    letters = [
        DeadLetter(*r)
        for r in conn.execute(
            "SELECT id, target, handler, type, payload, sender, attempts, reason, at FROM dead_letters "
            "WHERE target = %s ORDER BY id",
            (address,),
        )
    ]
    promises = [
        ResolvedPromise(str(name), bytes(value), float(at))
        for name, value, at in conn.execute(
            "SELECT name, value, at FROM promises WHERE address = %s ORDER BY name", (address,)
        )
    ]
    return ActorDetail(made, pending, letters, promises)

