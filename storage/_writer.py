"""The one writer: a thread that owns the only write connection and group-commits.

Whatever queued while the last commit ran goes into the next
``BEGIN IMMEDIATE … COMMIT``, with no artificial wait. The whole batch first runs
as one set of ``executemany`` calls under one savepoint (the fast path); if any
statement fails, the batch is rolled back to that savepoint and re-run one
savepoint per unit, so one bad unit fails alone. Each submitter is told the
outcome of its units after the commit, through one ``notify`` call per batch:
the event loop wakes once per batch, not once per unit.
"""

from __future__ import annotations

import logging
import time

import apsw

from errors import SteleError

from ._commits import CommitLog
from ._contract import InboxRow, Notify, Outcome, Unit
from ._errors import CommitUnknown, OperationalError, Unconsumed
from ._group_commit import GroupCommit
from ._ops import landed, statements
from ._payload_store import PayloadWriter
from ._sqlite import translate

log = logging.getLogger("stele.storage")

INSERT_INBOX = (
    "INSERT INTO inbox(id, target, handler, type, payload, due, idempotency_key, attempts, sender, at, "
    "timer_id, reply_to, reply_name) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_JOURNAL = "INSERT INTO journal(actor, seq, step, kind, type, data, at, crc) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
INSERT_SNAPSHOT = "INSERT OR REPLACE INTO snapshots(actor, seq, type, data, at, crc) VALUES (?, ?, ?, ?, ?, ?)"
DELETE_INBOX = "DELETE FROM inbox WHERE id = ?"
INSERT_ACTOR = "INSERT INTO actors(id, address, type, updated) VALUES (?, ?, ?, ?)"
UPDATE_HWM = "UPDATE meta SET value = ? WHERE key = 'step_hwm'"

HWM_BLOCK = 1024
"""Message ids are reserved this many at a time.

The high-water mark (ids are never reused) is written once per block, in the
transaction that first uses an id beyond it, instead of at every commit: one
page less for each lone commit, a fifth of what an ask writes. A restart
starts above the block, leaving its unused ids unused.
"""

MAX_ID = 2**63 - 1
"""The largest message id a journal stores (SQLite's and PostgreSQL's 64-bit integers)."""

COMMIT_RETRIES = (0.01, 0.1, 0.5)
"""The waits before each retry of units whose commit failed and did not land.

A fixed, short schedule rather than a :class:`~storage.Backoff`: the writer
thread holds every caller of the batch while it waits, so it gives up after
well under a second and reports the units as unknown (the runtime then backs
off per actor).
"""

class Writer(GroupCommit):
    """Group-commit writer thread over one APSW connection."""

    def __init__(
        self,
        conn: apsw.Connection,
        notify: Notify,
        *,
        step_hwm: int,
        commits: CommitLog | None = None,
        payloads: PayloadWriter | None = None,
    ) -> None:
        super().__init__(notify, name="stele-writer")
        self._conn = conn
        self._payloads = payloads or PayloadWriter(None)
        self._hwm = step_hwm
        self._commits = commits
        self._elided: dict[int, Unit] = {}  # inbox id -> unit consuming it, this attempt

    # -- committing ---------------------------------------------------------------

    def _attempts(self, units: list[Unit], outcomes: list[Outcome]) -> None:
        pending = list(range(len(units)))
        for delay in (*COMMIT_RETRIES, None):
            pending = self._attempt(units, pending, outcomes)
            if not pending or delay is None:
                break
            time.sleep(delay)

    def _after_unexpected(self) -> None:
        self._rollback()  # or every later BEGIN fails: "cannot start a transaction within a transaction"

    def _attempt(self, units: list[Unit], indexes: list[int], outcomes: list[Outcome]) -> list[int]:
        """One transaction over ``units[indexes]``; return the indexes to retry."""
        conn = self._conn
        batch = [units[i] for i in indexes]
        self._elided.clear()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except apsw.Error as exc:
            self._fail(outcomes, indexes, translate(exc, "cannot start a journal transaction"))
            return []
        try:
            failures = self._apply(batch)
            top = max((u.top for u in batch), default=0)
            hwm = self._hwm
            if top > hwm:
                hwm = min(top + HWM_BLOCK, MAX_ID)  # the block never runs past a 64-bit id
                conn.execute(UPDATE_HWM, (hwm,))
        except Exception as exc:
            # SQLite may already have rolled the whole transaction back (FULL,
            # IOERR, NOMEM do); nothing was committed either way: a definite
            # failure. Whatever it was, the transaction must not stay open.
            self._rollback()
            self._fail(outcomes, indexes, translate(exc, "journal write failed"))
            return []
        try:
            conn.execute("COMMIT")
        except apsw.Error as exc:
            # Indeterminate: the commit may be durable. Read back before deciding.
            self._rollback()
            return self._resolve(batch, indexes, outcomes, exc)
        self._hwm = hwm
        self.failing = None  # a commit went through: the disk works
        for position, i in enumerate(indexes):
            outcomes[i] = failures.get(position)
        return []

    def _apply(self, batch: list[Unit]) -> dict[int, Outcome]:
        """Run the batch; return the failures of single units (empty on the fast path)."""
        conn = self._conn
        conn.execute("SAVEPOINT batch")
        try:
            self._execute(batch)
        except Exception:  # a unit's rows (a constraint, a value that cannot be bound): find which
            if not conn.in_transaction:
                raise
            conn.execute("ROLLBACK TO batch")
            self._elided.clear()  # units run one by one now, each with its own rows
        else:
            conn.execute("RELEASE batch")
            return {}
        conn.execute("RELEASE batch")
        failures: dict[int, Outcome] = {}
        for position, unit in enumerate(batch):
            conn.execute("SAVEPOINT unit")
            try:
                self._execute([unit])
            except Unconsumed as exc:
                conn.execute("ROLLBACK TO unit")
                failures[position] = exc
            except Exception as exc:
                if not conn.in_transaction:
                    raise
                conn.execute("ROLLBACK TO unit")
                failures[position] = translate(exc, "journal write failed")
            conn.execute("RELEASE unit")
        return failures

    def _execute(self, batch: list[Unit]) -> None:
        conn = self._conn
        cursor = conn.cursor()
        inbox: list[InboxRow] = [row for u in batch for row in u.inbox]
        consumed = [i for u in batch for i in u.consumed]
        if inbox and consumed:
            # A message consumed in the very transaction that accepts it need not
            # pass through the inbox table at all: its step's journal entries
            # record it. (Common: a tell and its step often share a batch.)
            here = {row.id for row in inbox}.intersection(consumed)
            if here:
                inbox = [row for row in inbox if row.id not in here]
                consumed = [i for i in consumed if i not in here]
                # Reading back after a failed commit must not look for these
                # rows in the inbox: they landed if and only if their step did.
                for u in batch:
                    for i in u.consumed:
                        if i in here:
                            self._elided[i] = u
        payloads = self._payloads  # large values become references here: storage/_payload_store.py
        if inbox:
            cursor.executemany(INSERT_INBOX, payloads.inbox(conn, inbox))
        journal = [row for u in batch for row in u.journal]
        if journal:
            cursor.executemany(INSERT_JOURNAL, payloads.journal(conn, journal))
            if self._commits is not None:
                self._commits.position = conn.last_insert_rowid()
        snapshots = [row for u in batch for row in u.snapshots]
        if snapshots:
            cursor.executemany(INSERT_SNAPSHOT, payloads.snapshots(conn, snapshots))
        if consumed:
            before = conn.total_changes()
            cursor.executemany(DELETE_INBOX, [(i,) for i in consumed])
            if conn.total_changes() - before != len(consumed):
                raise Unconsumed(
                    f"a step consumed inbox message(s) {consumed} that are no longer pending: "
                    "it would be processed twice"
                )
        actors = [u.register for u in batch if u.register is not None]
        if actors:
            cursor.executemany(INSERT_ACTOR, actors)
        changes = payloads.ops
        for u in batch:
            for op in u.ops:
                for sql, params in statements(payloads.op(conn, op) if type(op) in changes else op):
                    # Read to the end: APSW runs a statement that returns rows (a
                    # pragma) only as far as its rows are read.
                    for _ in cursor.execute(sql, params):
                        pass

    def _fail(self, outcomes: list[Outcome], indexes: list[int], error: SteleError) -> None:
        """A definite failure for these units, unless an earlier attempt left them unknown.

        A transaction that fails before COMMIT writes no commit frame: it is a
        definite failure. But the frames of an earlier failed COMMIT of the same
        units are overwritten only by a commit that succeeds, so those stay unknown.
        """
        if isinstance(error, OperationalError):
            self.failing = error  # the disk, not one unit's data (that is an IntegrityError)
        for i in indexes:
            if not isinstance(outcomes[i], CommitUnknown):
                outcomes[i] = error

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except apsw.Error:
                log.warning("rollback after a failed journal write failed", exc_info=True)

    def _resolve(self, batch: list[Unit], indexes: list[int], outcomes: list[Outcome], exc: apsw.Error) -> list[int]:
        """After a failed COMMIT: which units landed? Those that did not are retried."""
        retry = []
        unknown: CommitUnknown | None = None
        for unit, i in zip(batch, indexes, strict=True):
            try:
                landed = self._landed(unit)
            except apsw.Error as again:
                outcomes[i] = unknown = CommitUnknown(
                    f"commit failed ({exc}) and reading back failed too ({again}); "
                    "the change may or may not be in the journal"
                )
                continue
            if landed:
                outcomes[i] = None
            else:
                # Not visible, yet not a definite failure: SQLite may have written
                # the commit's WAL frames (a failed fsync, a failed padding write)
                # without indexing them, and WAL recovery after a crash would bring
                # them back. Only a later commit, which overwrites them, settles it.
                retry.append(i)
                outcomes[i] = unknown = CommitUnknown(
                    f"journal commit failed ({type(exc).__name__}: {exc}); reading back does not find it, "
                    "but its WAL frames may remain and come back if the process stops before the next "
                    "commit: the change may or may not be in the journal"
                )
        self.failing = unknown  # None when everything landed: the commit went through after all
        if retry:
            log.warning("journal commit failed (%s); retrying %d unit(s) that did not land", exc, len(retry))
        return retry

    def _landed(self, unit: Unit) -> bool:
        """Whether ``unit`` is in the file, read back by its keys."""
        conn = self._conn
        if unit.journal:
            first = unit.journal[0]
            found = conn.execute(
                "SELECT step FROM journal WHERE actor = ? AND seq = ?", (first.actor, first.seq)
            ).fetchone()
            return found is not None and found[0] == first.message
        if unit.inbox:
            first_id = unit.inbox[0].id
            consumer = self._elided.get(first_id)
            if consumer is not None:
                return self._landed(consumer)
            return conn.execute("SELECT 1 FROM inbox WHERE id = ?", (first_id,)).fetchone() is not None
        if unit.consumed:
            return conn.execute("SELECT 1 FROM inbox WHERE id = ?", (unit.consumed[0],)).fetchone() is None
        # Only operations, which commit together: one that can tell decides for
        # all; if none can, all are safe to run again.
        answers = [answer for answer in (landed(conn, op) for op in unit.ops) if answer is not None]
        return bool(answers) and answers[0]
