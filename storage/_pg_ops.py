"""The named operations of the storage contract, as PostgreSQL statements.

The same operations as :mod:`storage._ops` carries out on SQLite, and the same
way of telling, after a COMMIT whose outcome was lost, whether each landed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from . import _contract as c

Statement = tuple[str, tuple[Any, ...]]
Conn = psycopg.Connection[Any]


def statements(op: c.Op) -> list[Statement]:
    """The statements that carry out ``op``, in order."""
    return _STATEMENTS[type(op)](op)


def landed(conn: Conn, op: c.Op) -> bool | None:
    """Whether ``op`` is in the database (read back after a lost COMMIT), or None if it cannot tell.

    An operation that cannot tell is one that is safe to run again.
    """
    check = _LANDED.get(type(op))
    return check(conn, op) if check is not None else None


def meta_columns(value: str | int | float | None) -> tuple[str | None, int | None, float | None]:
    """A meta value spread over its three typed columns."""
    if isinstance(value, str):
        return value, None, None
    if isinstance(value, bool | int):
        return None, int(value), None
    if isinstance(value, float):
        return None, None, value
    return None, None, None


def _put_meta(op: Any) -> list[Statement]:
    return [
        (
            "INSERT INTO meta(key, text_value, int_value, real_value) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (key) DO UPDATE SET text_value = excluded.text_value, int_value = excluded.int_value, "
            "real_value = excluded.real_value",
            (op.key, *meta_columns(op.value)),
        )
    ]


def _record_key(op: Any) -> list[Statement]:
    return [
        (
            "INSERT INTO idempotency(key, address, step, reply, at, kind, handler) VALUES (%s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (key) DO UPDATE SET address = excluded.address, step = excluded.step, "
            "reply = excluded.reply, at = excluded.at, kind = excluded.kind, handler = excluded.handler",
            (op.key, op.address, op.message, op.reply, op.at, op.kind, op.handler),
        )
    ]


def _forget_key(op: Any) -> list[Statement]:
    # `at < before` again: a key used anew since it was found expired is not.
    return [("DELETE FROM idempotency WHERE key = %s AND at < %s", (op.key, op.before))]


def _cancel_timer(op: Any) -> list[Statement]:
    return [("DELETE FROM inbox WHERE timer_id = %s", (op.timer_id,))]


def _put_promise(op: Any) -> list[Statement]:
    params = (op.address, op.name, op.value, op.at)
    if op.replace:
        return [
            (
                "INSERT INTO promises(address, name, value, at) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (address, name) DO UPDATE SET value = excluded.value, at = excluded.at",
                params,
            )
        ]
    return [("INSERT INTO promises(address, name, value, at) VALUES (%s, %s, %s, %s)", params)]


def _take_promise(op: Any) -> list[Statement]:
    return [("DELETE FROM promises WHERE address = %s AND name = %s", (op.address, op.name))]


def _set_status(op: Any) -> list[Statement]:
    return [("UPDATE actors SET status = %s, reason = %s WHERE address = %s", (op.status, op.reason, op.address))]


def _mark_attempt(op: Any) -> list[Statement]:
    return [("UPDATE inbox SET attempts = %s WHERE id = %s", (op.attempts, op.message))]


def _bury(op: Any) -> list[Statement]:
    return [
        (
            "INSERT INTO dead_letters(id, target, handler, type, payload, sender, attempts, reason, at) "
            "SELECT id, target, handler, type, payload, sender, %s, %s, %s FROM inbox WHERE id = %s",
            (op.attempts, op.reason, op.at, op.message),
        ),
        ("DELETE FROM inbox WHERE id = %s", (op.message,)),
    ]


def _revive(op: Any) -> list[Statement]:
    return [
        (
            "INSERT INTO inbox(id, target, handler, type, payload, attempts, sender, at) "
            "SELECT id, target, handler, type, payload, 0, sender, %s FROM dead_letters WHERE id = %s",
            (op.at, op.letter),
        ),
        ("DELETE FROM dead_letters WHERE id = %s", (op.letter,)),
    ]


def _drop_dead_letter(op: Any) -> list[Statement]:
    return [("DELETE FROM dead_letters WHERE id = %s", (op.letter,))]


def _set_floor(op: Any) -> list[Statement]:
    # Only up, and only onto a snapshot (as on SQLite).
    return [
        (
            "UPDATE actors SET floor = %s WHERE address = %s AND floor < %s "
            "AND EXISTS (SELECT 1 FROM snapshots WHERE snapshots.actor = actors.id AND snapshots.seq = %s)",
            (op.seq, op.address, op.seq, op.seq),
        )
    ]


def _drop_history(op: Any) -> list[Statement]:
    # Bounded by the floor read in the same statement, whatever the caller asked.
    floor = "(SELECT floor FROM actors WHERE id = %s)"
    return [
        (
            f"DELETE FROM journal WHERE actor = %s AND seq >= %s AND seq < %s AND seq < {floor}",
            (op.actor, op.from_seq, op.below_seq, op.actor),
        ),
        (f"DELETE FROM snapshots WHERE actor = %s AND seq < %s AND seq < {floor}", (op.actor, op.below_seq, op.actor)),
    ]


def _reclaim_space(op: Any) -> list[Statement]:
    # PostgreSQL's autovacuum makes deleted rows' room reusable; giving it back to
    # the file system takes VACUUM FULL, a rewrite under an exclusive lock: not here.
    return []


def _reclaim(op: Any) -> list[Statement]:
    return []  # nothing to reclaim: a PostgreSQL journal keeps every value in its row (docs/payloads.md)


_STATEMENTS: dict[type[c.Op], Callable[[Any], list[Statement]]] = {
    c.PutMeta: _put_meta,
    c.RecordKey: _record_key,
    c.ForgetKey: _forget_key,
    c.CancelTimer: _cancel_timer,
    c.PutPromise: _put_promise,
    c.TakePromise: _take_promise,
    c.SetStatus: _set_status,
    c.MarkAttempt: _mark_attempt,
    c.Bury: _bury,
    c.Revive: _revive,
    c.DropDeadLetter: _drop_dead_letter,
    c.SetFloor: _set_floor,
    c.DropHistory: _drop_history,
    c.ReclaimSpace: _reclaim_space,
    c.Reclaim: _reclaim,
}


def _promise_landed(conn: Conn, op: Any) -> bool:
    # Not safe to run again: a second INSERT of a resolved promise fails.
    row = conn.execute("SELECT value FROM promises WHERE address = %s AND name = %s", (op.address, op.name)).fetchone()
    return row is not None and bytes(row[0]) == op.value


def _revive_landed(conn: Conn, op: Any) -> bool:
    return conn.execute("SELECT 1 FROM inbox WHERE id = %s", (op.letter,)).fetchone() is not None


_LANDED: dict[type[c.Op], Callable[[Conn, Any], bool]] = {
    c.PutPromise: _promise_landed,
    c.Revive: _revive_landed,
}
