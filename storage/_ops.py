"""The named operations of the storage contract, as SQLite statements.

Each operation of :mod:`storage._contract` becomes one or two statements here,
and says how to tell, after a COMMIT that failed, whether it landed (for the
writer's read-back; see :meth:`storage._writer.Writer._resolve`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import apsw

from . import _contract as c
from ._payload_store import DROPPED, dropped_params, resolve

Statement = tuple[str, tuple[Any, ...]]


def statements(op: c.Op) -> list[Statement]:
    """The statements that carry out ``op``, in order."""
    return _STATEMENTS[type(op)](op)


def landed(conn: apsw.Connection, op: c.Op) -> bool | None:
    """Whether ``op`` is in the file (read back after a failed COMMIT), or None if it cannot tell.

    An operation that cannot tell is one that is safe to run again (an
    upsert, a delete): running it once more changes nothing.
    """
    check = _LANDED.get(type(op))
    return check(conn, op) if check is not None else None


def _put_meta(op: Any) -> list[Statement]:
    return [("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (op.key, op.value))]


def _record_key(op: Any) -> list[Statement]:
    return [
        (
            "INSERT OR REPLACE INTO idempotency(key, address, step, reply, at, kind, handler) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (op.key, op.address, op.message, op.reply, op.at, op.kind, op.handler),
        )
    ]


def _forget_key(op: Any) -> list[Statement]:
    # `at < before` again: a key used anew since it was found expired is not.
    return [("DELETE FROM idempotency WHERE key = ? AND at < ?", (op.key, op.before))]


def _cancel_timer(op: Any) -> list[Statement]:
    return [("DELETE FROM inbox WHERE timer_id = ?", (op.timer_id,))]


def _put_promise(op: Any) -> list[Statement]:
    verb = "INSERT OR REPLACE" if op.replace else "INSERT"
    params = (op.address, op.name, op.value, op.at)
    return [(f"{verb} INTO promises(address, name, value, at) VALUES (?, ?, ?, ?)", params)]


def _take_promise(op: Any) -> list[Statement]:
    return [("DELETE FROM promises WHERE address = ? AND name = ?", (op.address, op.name))]


def _set_status(op: Any) -> list[Statement]:
    return [("UPDATE actors SET status = ?, reason = ? WHERE address = ?", (op.status, op.reason, op.address))]


def _mark_attempt(op: Any) -> list[Statement]:
    return [("UPDATE inbox SET attempts = ? WHERE id = ?", (op.attempts, op.message))]


def _bury(op: Any) -> list[Statement]:
    return [
        (
            "INSERT INTO dead_letters(id, target, handler, type, payload, sender, attempts, reason, at) "
            "SELECT id, target, handler, type, payload, sender, ?, ?, ? FROM inbox WHERE id = ?",
            (op.attempts, op.reason, op.at, op.message),
        ),
        ("DELETE FROM inbox WHERE id = ?", (op.message,)),
    ]


def _revive(op: Any) -> list[Statement]:
    return [
        (
            "INSERT INTO inbox(id, target, handler, type, payload, attempts, sender, at) "
            "SELECT id, target, handler, type, payload, 0, sender, ? FROM dead_letters WHERE id = ?",
            (op.at, op.letter),
        ),
        ("DELETE FROM dead_letters WHERE id = ?", (op.letter,)),
    ]


def _drop_dead_letter(op: Any) -> list[Statement]:
    return [("DELETE FROM dead_letters WHERE id = ?", (op.letter,))]


def _set_floor(op: Any) -> list[Statement]:
    # Only up, and only onto a snapshot: a floor with no state to start from
    # would make the history above it unreadable.
    return [
        (
            "UPDATE actors SET floor = ? WHERE address = ? AND floor < ? "
            "AND EXISTS (SELECT 1 FROM snapshots WHERE snapshots.actor = actors.id AND snapshots.seq = ?)",
            (op.seq, op.address, op.seq, op.seq),
        )
    ]


def _drop_history(op: Any) -> list[Statement]:
    # Bounded by the floor read in the same statement, whatever the caller asked:
    # nothing a read may still serve can be dropped.
    # The writer's payload store demotes their chunks first (storage/_payload_store.py).
    journal, snapshots = dropped_params(op)
    return [
        (f"DELETE FROM journal WHERE {DROPPED[0]}", journal),
        (f"DELETE FROM snapshots WHERE {DROPPED[1]}", snapshots),
    ]


def _reclaim_space(op: Any) -> list[Statement]:
    # Moves up to N pages from the end of the file into free pages and truncates
    # it (auto_vacuum=INCREMENTAL; a journal without it has nothing to give back
    # this way and the pragma does nothing). N is an int: safe to inline, and a
    # pragma takes no bound parameters.
    return [(f"PRAGMA incremental_vacuum({int(op.pages)})", ())]


def _reclaim(op: Any) -> list[Statement]:
    return []  # not a statement: the writer's payload store carries it out (storage/_payload_store.py)


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


def _promise_landed(conn: apsw.Connection, op: Any) -> bool:
    # Not safe to run again: a second INSERT of a resolved promise fails.
    row = conn.execute("SELECT value FROM promises WHERE address = ? AND name = ?", (op.address, op.name)).fetchone()
    return row is not None and resolve(conn, bytes(row[0])) == op.value


def _revive_landed(conn: apsw.Connection, op: Any) -> bool:
    # Run again after landing it would find no dead letter to move: harmless, but
    # the inbox row is the proof.
    return conn.execute("SELECT 1 FROM inbox WHERE id = ?", (op.letter,)).fetchone() is not None


_LANDED: dict[type[c.Op], Callable[[apsw.Connection, Any], bool]] = {
    c.PutPromise: _promise_landed,
    c.Revive: _revive_landed,
}
