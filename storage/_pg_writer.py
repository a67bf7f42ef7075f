"""The PostgreSQL writer: a thread that owns the one write connection and group-commits.

As on SQLite, whatever queued while the last commit ran goes into the next
transaction, with no artificial wait. The fast path sends the whole batch and
its COMMIT in one round trip (psycopg's pipeline mode): each table's rows as
binary arrays through one ``INSERT … SELECT * FROM unnest(…)``, the consumed
messages through ``stele_consume`` (which raises if one is no longer
pending), then the operations, the message-id high-water mark and COMMIT. If
any statement fails, PostgreSQL skips the rest (COMMIT included) and the batch
is rolled back and run again unit by unit, each under its own savepoint, in
transactions of at most :data:`MAX_SUBTRANSACTIONS` units (beyond 64 written
subtransactions a backend's subtransaction cache overflows, which slows every
other session's snapshots), so that one bad unit fails alone.

The shape of a transaction (statements, then results checked by the server
before COMMIT, in the same round trip) is where a per-actor fencing check
goes once many nodes share a database: one more statement that raises.

Outcomes: a statement that fails is a definite failure (nothing of the
transaction is kept). When the connection breaks while a transaction is in
flight, the COMMIT may or may not have happened: the writer reconnects, makes
sure its old session is gone (it held the owner lock, so it is terminated if
it lingers: only then is its transaction settled one way or the other), and
reads the units back by their keys. Units that landed succeeded; units that
did not are retried; when the database cannot be reached again within the
retries, they are :class:`~storage.CommitUnknown`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from errors import SteleError

from ._contract import InboxRow, Notify, Outcome, Unit
from ._errors import CommitUnknown, LeaseLost, OperationalError, Unconsumed
from ._group_commit import GroupCommit
from ._pg_arrays import Blobs, Float8s, Int8s, Texts, register
from ._pg_connect import broken, translate
from ._pg_ops import landed, statements
from ._pg_schema import FENCED, UNCONSUMED

log = logging.getLogger("stele.storage")

Conn = psycopg.Connection[Any]

INSERT_INBOX = (
    "INSERT INTO inbox(id, target, handler, type, payload, due, idempotency_key, attempts, sender, at, "
    "timer_id, reply_to, reply_name) SELECT * FROM unnest(%b::int8[], %b::text[], %b::text[], %b::text[], "
    "%b::bytea[], %b::float8[], %b::text[], %b::int8[], %b::text[], %b::float8[], %b::text[], %b::text[], %b::text[])"
)
INSERT_JOURNAL = (
    "INSERT INTO journal(actor, seq, step, kind, type, data, at, crc) SELECT * FROM unnest("
    "%b::int8[], %b::int8[], %b::int8[], %b::text[], %b::text[], %b::bytea[], %b::float8[], %b::int8[])"
)
INSERT_SNAPSHOTS = (
    "INSERT INTO snapshots(actor, seq, type, data, at, crc) SELECT * FROM unnest("
    "%b::int8[], %b::int8[], %b::text[], %b::bytea[], %b::float8[], %b::int8[]) "
    "ON CONFLICT (actor, seq) DO UPDATE SET type = excluded.type, data = excluded.data, at = excluded.at, "
    "crc = excluded.crc"
)
INSERT_ACTORS = (
    "INSERT INTO actors(id, address, type, updated) SELECT * FROM unnest(%b::int8[], %b::text[], %b::text[], "
    "%b::float8[])"
)
CONSUME = "SELECT stele_consume(%b::int8[])"
UPDATE_HWM = "UPDATE meta SET int_value = greatest(int_value, %b) WHERE key = 'step_hwm'"
"""Never lowered: with many nodes, others reserve ids above what this writer has used."""
FENCE = "SELECT stele_fence(%s, %b::int8[]::int4[], %b::int8[])"
"""A unit's node must still hold the leases it names (see storage/_pg_nodes.py)."""
MESSAGE_LANDED = """SELECT EXISTS (SELECT 1 FROM inbox WHERE id = %(id)s)
    OR EXISTS (SELECT 1 FROM journal WHERE actor = (SELECT id FROM actors WHERE address = %(target)s) AND step = %(id)s)
    OR EXISTS (SELECT 1 FROM dead_letters WHERE id = %(id)s)"""
"""Whether an inbox row committed: pending still, or already processed (with many nodes, another
node may run a message before its sender reads back a commit it lost the answer to)."""

MAX_SUBTRANSACTIONS = 64
"""Units per transaction on the isolated path (one savepoint each)."""

RETRIES = (0.05, 0.2, 0.5, 1.0, 2.0)
"""The waits between attempts to reconnect after the connection broke during a commit
(about 4 s in all: long enough for a server restart, short enough that callers hear back)."""

ATTEMPTS = 3
"""How often units that did not land after a lost commit are sent again."""

Statement = tuple[str, Sequence[Any]]


class Broken(Exception):
    """The connection went away; the transaction in flight may or may not have committed."""


class PgWriter(GroupCommit):
    """Group-commit writer thread over one psycopg connection."""

    def __init__(
        self,
        conn: Conn,
        notify: Notify,
        *,
        step_hwm: int,
        reconnect: Callable[[int | None], Conn],
        where: str,
    ) -> None:
        super().__init__(notify, name="stele-pg-writer")
        register(conn)  # numbers as binary arrays without a Python loop per element
        self._conn: Conn | None = conn
        self._reconnect = reconnect
        """Opens a new connection that holds the owner lock; given the old session's backend pid."""
        self._where = where
        self._backend_pid: int | None = conn.info.backend_pid
        self._hwm = step_hwm
        self.node: str | None = None
        """This node's id when many nodes share the database: units with a fence are checked against it."""
        self._elided: dict[int, Unit] = {}

    @property
    def connection(self) -> Conn | None:
        """The write connection (None while it is being replaced)."""
        return self._conn

    # -- committing ---------------------------------------------------------------

    def _attempts(self, units: list[Unit], outcomes: list[Outcome]) -> None:
        pending = list(range(len(units)))
        for _ in range(ATTEMPTS):
            pending = self._attempt(units, pending, outcomes)
            if not pending or self._abandoned:
                break

    def _after_unexpected(self) -> None:
        self._drop_connection()

    def _attempt(self, units: list[Unit], indexes: list[int], outcomes: list[Outcome]) -> list[int]:
        """Commit ``units[indexes]``; return the indexes to retry."""
        conn = self._connected(outcomes, indexes)
        if conn is None:
            return []  # nothing was sent: a definite failure (the runtime backs off and probes)
        batch = [units[i] for i in indexes]
        try:
            self._fast(conn, batch)
        except Broken as exc:
            return self._resolve(batch, indexes, outcomes, exc)
        except _Failed:
            pass  # one or more units failed: none of the batch is committed; isolate them
        else:
            self._committed(batch)
            for i in indexes:
                outcomes[i] = None
            return []
        retry: list[int] = []
        for start in range(0, len(batch), MAX_SUBTRANSACTIONS):
            chunk = batch[start : start + MAX_SUBTRANSACTIONS]
            chunk_indexes = indexes[start : start + MAX_SUBTRANSACTIONS]
            conn = self._connected(outcomes, chunk_indexes)
            if conn is None:
                continue
            try:
                failures = self._isolated(conn, chunk)
            except Broken as exc:
                retry.extend(self._resolve(chunk, chunk_indexes, outcomes, exc))
                continue
            except SteleError as exc:  # the transaction itself failed (not one unit): nothing kept
                self._fail(outcomes, chunk_indexes, exc)
                continue
            self._committed([u for k, u in enumerate(chunk) if k not in failures])
            for k, i in enumerate(chunk_indexes):
                outcomes[i] = failures.get(k)
        return retry

    def _committed(self, batch: list[Unit]) -> None:
        self._hwm = max(self._hwm, max((u.top for u in batch), default=0))
        self.failing = None  # a commit went through: the database works

    # -- the fast path: the whole batch and its COMMIT in one round trip ------------------

    def _fast(self, conn: Conn, batch: list[Unit]) -> None:
        """Commit ``batch`` whole; raise :class:`_Failed` (rolled back) or :class:`Broken`."""
        self._elided.clear()
        try:
            work = self._statements(batch, elide=True, hwm=self._hwm)
        except Exception:  # a value the arrays cannot hold: find which unit
            raise _Failed from None
        try:
            with conn.pipeline():
                conn.execute("BEGIN")
                cursor = conn.cursor()
                for sql, params in work:
                    cursor.execute(sql, params)
                conn.execute("COMMIT")
        except Exception as exc:
            if broken(exc) or conn.closed:
                raise Broken(str(exc)) from None
            self._rollback(conn)
            raise _Failed from None

    def _statements(self, batch: list[Unit], *, elide: bool, hwm: int) -> list[Statement]:
        """The statements that write ``batch``: one per table, then the operations, then the
        message-id high-water mark if the batch raises it above ``hwm`` (what is committed)."""
        inbox: list[InboxRow] = [row for u in batch for row in u.inbox]
        consumed = [i for u in batch for i in u.consumed]
        if elide and inbox and consumed:
            # A message consumed in the very transaction that accepts it never
            # passes through the inbox table: its step's entries record it.
            here = {row.id for row in inbox}.intersection(consumed)
            if here:
                inbox = [row for row in inbox if row.id not in here]
                consumed = [i for i in consumed if i not in here]
                for u in batch:
                    for i in u.consumed:
                        if i in here:
                            self._elided[i] = u
        work: list[Statement] = []
        fences = {u.fence for u in batch if u.fence is not None}
        if fences:
            if self.node is None:
                raise LeaseLost("a unit names a lease, and this journal is not opened as a node")
            shards, generations = zip(*sorted(fences), strict=True)
            work.append((FENCE, [self.node, Int8s(list(shards)), Int8s(list(generations))]))
        if inbox:
            cols: list[list[Any]] = [list(c) for c in zip(*inbox, strict=True)]
            cols[0], cols[7], cols[9] = Int8s(cols[0]), Int8s(cols[7]), Float8s(cols[9])  # id, attempts, at
            cols[5] = [_real(v) for v in cols[5]]  # due (may be NULL)
            cols[4] = Blobs(cols[4])  # payload
            for text in (1, 2, 3, 6, 8, 10, 11, 12):  # target, handler, type, key, sender, timer, reply
                cols[text] = Texts(cols[text])
            work.append((INSERT_INBOX, cols))
        journal = [row for u in batch for row in u.journal]
        if journal:
            work.append(
                (
                    INSERT_JOURNAL,
                    [
                        Int8s([r.actor for r in journal]),
                        Int8s([r.seq for r in journal]),
                        Int8s([r.message for r in journal]),
                        Texts([str(r.kind) for r in journal]),
                        Texts([r.type for r in journal]),
                        Blobs([r.data for r in journal]),
                        Float8s([r.at for r in journal]),
                        Int8s([r.crc for r in journal]),
                    ],
                )
            )
        snapshots = [row for u in batch for row in u.snapshots]
        if snapshots:
            work.append(
                (
                    INSERT_SNAPSHOTS,
                    [
                        Int8s([r.actor for r in snapshots]),
                        Int8s([r.seq for r in snapshots]),
                        Texts([r.type for r in snapshots]),
                        Blobs([r.data for r in snapshots]),
                        Float8s([r.at for r in snapshots]),
                        Int8s([r.crc for r in snapshots]),
                    ],
                )
            )
        if consumed:
            work.append((CONSUME, [Int8s(consumed)]))
        actors = [u.register for u in batch if u.register is not None]
        if actors:
            work.append(
                (
                    INSERT_ACTORS,
                    [Int8s([a.id for a in actors]), Texts([a.address for a in actors]), Texts([a.type for a in actors]),
                     Float8s([a.at for a in actors])],
                )
            )  # fmt: skip
        for u in batch:
            for op in u.ops:
                work.extend(statements(op))
        top = max((u.top for u in batch), default=0)
        if top > hwm:
            work.append((UPDATE_HWM, [top]))
        return work

    # -- the isolated path: one savepoint per unit ----------------------------------------

    def _isolated(self, conn: Conn, chunk: list[Unit]) -> dict[int, Outcome]:
        """Commit each unit of ``chunk`` that can be; return the failures by position."""
        self._elided.clear()
        failures: dict[int, Outcome] = {}
        hwm = self._hwm  # raised in memory only once a COMMIT says so (see _committed)
        try:
            conn.execute("BEGIN")
            for position, unit in enumerate(chunk):
                conn.execute("SAVEPOINT unit")
                try:
                    for sql, params in self._statements([unit], elide=False, hwm=hwm):
                        conn.execute(sql, params)
                except Exception as exc:
                    if broken(exc) or conn.closed:
                        raise
                    conn.execute("ROLLBACK TO SAVEPOINT unit")
                    failures[position] = _unit_error(exc)
                    continue
                conn.execute("RELEASE SAVEPOINT unit")
                hwm = max(hwm, unit.top)  # the next units of this transaction need not raise it again
            conn.execute("COMMIT")
        except Exception as exc:
            if broken(exc) or conn.closed:
                raise Broken(str(exc)) from None
            self._rollback(conn)
            raise translate(exc, "journal write failed") from None
        return failures

    # -- outcomes -------------------------------------------------------------------------

    def _fail(self, outcomes: list[Outcome], indexes: list[int], error: SteleError) -> None:
        """A definite failure for these units, unless an earlier attempt left them unknown."""
        if isinstance(error, OperationalError):
            self.failing = error
        for i in indexes:
            if not isinstance(outcomes[i], CommitUnknown):
                outcomes[i] = error

    def _connected(self, outcomes: list[Outcome], indexes: list[int]) -> Conn | None:
        """The write connection, reconnected (owner lock and all) if it was lost; None if it cannot be."""
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self._drop_connection()
        try:
            conn = self._reconnect(self._backend_pid)
        except SteleError as exc:
            self._fail(outcomes, indexes, exc)
            return None
        except Exception as exc:
            self._fail(outcomes, indexes, translate(exc, f"cannot reconnect to {self._where}"))
            return None
        register(conn)
        self._conn = conn
        self._backend_pid = conn.info.backend_pid
        return conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                log.debug("closing a broken connection failed", exc_info=True)

    def _rollback(self, conn: Conn) -> None:
        try:
            conn.execute("ROLLBACK")
        except Exception:
            log.warning("rollback after a failed journal write failed", exc_info=True)
            self._drop_connection()

    def _resolve(self, batch: list[Unit], indexes: list[int], outcomes: list[Outcome], exc: Broken) -> list[int]:
        """The connection broke with a transaction in flight: which units landed?

        A single owner's reconnection ends its old session first (see
        ``reconnect``), so what is read back is final: a unit that is not there
        did not commit, and is retried. A node does not (yet): after a network
        cut that the server has not noticed, its old session may still commit
        after the read-back (docs/nodes.md, limits).
        """
        log.warning("lost the connection to %s during a commit (%s): reading back", self._where, exc)
        unknown = CommitUnknown(
            f"the connection to {self._where} was lost during a commit ({exc}) and the database could not be "
            "reached again to read it back: the change may or may not be in the journal"
        )
        for i in indexes:
            outcomes[i] = unknown
        self.failing = unknown
        # Never read back on the connection that broke: psycopg may not mark it broken yet (a server
        # shutting down ends a pipeline with "cannot exit pipeline mode while busy"), and the read-back
        # failing on it at once gave up before the server was even asked again.
        self._drop_connection()
        conn = None
        for delay in (0.0, *RETRIES):  # ride out a server restart
            if self._abandoned:
                return []
            time.sleep(delay)
            conn = self._connected(outcomes, [])
            if conn is not None:
                break
        if conn is None:
            return []
        retry = []
        try:
            for unit, i in zip(batch, indexes, strict=True):
                if self._landed(conn, unit):
                    outcomes[i] = None
                    self._committed([unit])
                else:  # did not commit (its session is gone): a definite failure, unless a retry commits it
                    outcomes[i] = OperationalError(f"the connection to {self._where} was lost before the commit")
                    retry.append(i)
        except Exception as again:
            log.warning("reading back after a lost commit failed: %s", again)
            self._drop_connection()
            return []
        self.failing = None  # the database answers again; what did not land is retried now
        return retry

    def _landed(self, conn: Conn, unit: Unit) -> bool:
        """Whether ``unit`` is in the database, read back by its keys."""
        if unit.journal:
            first = unit.journal[0]
            row = conn.execute(
                "SELECT step FROM journal WHERE actor = %s AND seq = %s", (first.actor, first.seq)
            ).fetchone()
            return row is not None and row[0] == first.message
        if unit.inbox:
            message = unit.inbox[0]
            consumer = self._elided.get(message.id)
            if consumer is not None:
                return self._landed(conn, consumer)
            row = conn.execute(MESSAGE_LANDED, {"id": message.id, "target": message.target}).fetchone()
            return bool(row and row[0])
        if unit.consumed:
            return conn.execute("SELECT 1 FROM inbox WHERE id = %s", (unit.consumed[0],)).fetchone() is None
        if unit.snapshots:
            first_snapshot = unit.snapshots[0]
            row = conn.execute(
                "SELECT data FROM snapshots WHERE actor = %s AND seq = %s", (first_snapshot.actor, first_snapshot.seq)
            ).fetchone()
            return row is not None and bytes(row[0]) == first_snapshot.data
        answers = [answer for answer in (landed(conn, op) for op in unit.ops) if answer is not None]
        return bool(answers) and answers[0]


class _Failed(Exception):
    """A statement of the batch failed: nothing of it was committed."""


def _real(value: float | None) -> float | None:
    return None if value is None else float(value)


def _unit_error(exc: BaseException) -> SteleError:
    if getattr(exc, "sqlstate", None) == UNCONSUMED:
        return Unconsumed(str(exc).strip().splitlines()[0])
    if getattr(exc, "sqlstate", None) == FENCED:
        return LeaseLost(str(exc).strip().splitlines()[0])
    return translate(exc, "journal write failed")
