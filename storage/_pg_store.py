"""The runtime's handle on a PostgreSQL journal: ownership, the writer, and pooled reads.

One runtime owns a database (more exactly: the schema its tables are in) at a
time, through a session-level advisory lock held by the writer's own
connection: every transaction the writer commits is made while the lock is
held, and the lock goes when that session goes, however the runtime dies. A
writer that lost its connection takes the lock again before it writes
anything (and ends its old session if it lingers on the server); if another
runtime took it meanwhile, it writes nothing more.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import psycopg

from ._contract import Done, Notify, Unit, WriterStats
from ._errors import OperationalError, OwnedElsewhere, SchemaError, StorageError
from ._pg_connect import broken, connect, redact, translate
from ._pg_reads import PgReads
from ._pg_schema import check_version, lock_key, migrate, schema_version
from ._pg_writer import PgWriter

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger("stele.storage")

Conn = psycopg.Connection[Any]

SYNCHRONOUS_COMMIT = {"fsync": "on", "normal": "off", "replicated": "on"}
"""Durability level -> the write connection's ``synchronous_commit`` (docs/postgresql.md)."""

READERS = 4
"""Reader connections of a store: activations and look-ups run in threads at once."""

OWNER_GONE_WAIT_S = 2.0
"""How long a runtime waits for the owner lock before saying who holds it."""

STALE_SESSION_WAIT_S = 10.0
"""How long a writer waits for its own old session to end after terminating it."""


class Pool:
    """A few connections for reads, each used by one thread at a time; reconnects once on a broken one.

    A thread that finds every connection in use waits for one to come back, or
    for a place to make a new one: a connection found broken (the server
    restarted, or ended our sessions) is dropped, the idle ones with it (they
    are gone too), and each drop wakes a waiter, so that no reader waits for a
    connection that will never be given back.
    """

    def __init__(self, url: str, size: int, where: str, first: Conn | None = None) -> None:
        self._url = url
        self._where = where
        self._idle: list[Conn] = []
        self._size = size
        self._all: list[Conn] = []  # made and not yet dropped: idle or in use
        self._making = 0  # places taken by connections being made
        self._waiting = 0
        self._cond = threading.Condition()
        self._closed = False
        if first is not None:  # a connection the opener made anyway: one authentication fewer
            self._all.append(first)
            self._idle.append(first)

    @property
    def waiting(self) -> int:
        """How many threads are waiting for a connection."""
        with self._cond:
            return self._waiting

    def _take(self) -> Conn:
        with self._cond:
            while True:
                if self._closed:
                    raise OperationalError(f"the journal {self._where} is closed")
                if self._idle:
                    return self._idle.pop()
                if len(self._all) + self._making < self._size:
                    self._making += 1
                    break
                self._waiting += 1
                try:
                    self._cond.wait()
                finally:
                    self._waiting -= 1
        made: Conn | None = None
        try:
            made = connect(self._url, readonly=True)
        finally:
            with self._cond:
                self._making -= 1
                if made is not None:
                    self._all.append(made)
                self._cond.notify()  # failed: the place is free for a waiter to try
        return made

    def _give(self, conn: Conn) -> None:
        with self._cond:
            keep = not (conn.closed or self._closed)
            if keep:
                self._idle.append(conn)
            elif conn in self._all:
                self._all.remove(conn)
            self._cond.notify()
        if not keep and not conn.closed:
            conn.close()

    def _drain(self) -> None:
        """Drop the idle connections (after one was found broken, they are too): the next reads make new ones."""
        with self._cond:
            idle, self._idle = self._idle, []
            for conn in idle:
                self._all.remove(conn)
            self._cond.notify_all()
        for conn in idle:
            conn.close()

    def run(self, query: Callable[Concatenate[Conn, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``query(connection, *args)``; a connection found broken is replaced and the query run once more."""
        for attempt in (1, 2):
            conn = self._take()  # a connection that cannot be made fails with the reason, translated
            try:
                return query(conn, *args, **kwargs)
            except Exception as exc:
                lost = broken(exc) or conn.closed or conn.broken
                if lost:  # the server restarted, or ended our sessions: the idle ones are gone too
                    conn.close()
                    self._drain()
                if not lost or attempt == 2:
                    if isinstance(exc, psycopg.Error | UnicodeError):
                        raise translate(exc, f"cannot read {self._where}") from None
                    raise
            finally:
                self._give(conn)
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close every connection (those in use close when given back); waiting readers are told it closed.

        Never one in use: a thread may still be reading on it (a runtime's worker
        thread outlives the runtime it read for), and libpq freed under a running
        call can abort the process.
        """
        with self._cond:
            self._closed = True
            conns, self._idle = self._idle, []
            for conn in conns:
                self._all.remove(conn)
            self._cond.notify_all()
        for conn in conns:
            try:
                conn.close()
            except Exception:
                log.debug("closing a reader failed", exc_info=True)


def take_ownership(conn: Conn, where: str, *, previous_backend: int | None = None) -> None:
    """Take the database's owner lock on ``conn``, or raise :class:`OwnedElsewhere` naming the owner.

    ``previous_backend``: the backend pid of this writer's own earlier session
    (lost by the client, maybe still alive on the server, still holding the
    lock). That one is terminated and waited for: only once it is gone is its
    last transaction settled, so that reading back after it is final.
    """
    key = lock_key(conn)
    started = time.monotonic()
    while True:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        if row is not None and row[0]:
            return
        holder = _holder(conn, key)
        waited = time.monotonic() - started
        if (
            previous_backend is not None
            and holder == previous_backend
            and waited < STALE_SESSION_WAIT_S
            and _ours(conn, holder)
        ):
            conn.execute("SELECT pg_terminate_backend(%s)", (holder,))
            time.sleep(0.05)
            continue
        if waited < OWNER_GONE_WAIT_S:
            # The session of an owner that just closed or died lingers on the server for a
            # moment (it ends once the server notices the connection closed): wait for that.
            time.sleep(0.05)
            continue
        raise _owned(conn, where, holder)


def share_ownership(conn: Conn, where: str) -> None:
    """Hold the database's owner lock shared, as one of many nodes; refused while a single owner holds it."""
    key = lock_key(conn)
    started = time.monotonic()
    while True:
        row = conn.execute("SELECT pg_try_advisory_lock_shared(%s)", (key,)).fetchone()
        if row is not None and row[0]:
            return
        if time.monotonic() - started < OWNER_GONE_WAIT_S:
            time.sleep(0.05)  # an owner that just stopped: its session lingers a moment
            continue
        raise _owned(conn, where, _holder(conn, key))


def migrate_shared(conn: Conn, where: str) -> None:
    """Migrate while other nodes may start too: one at a time, under a lock of its own."""
    key = lock_key(conn) ^ 1
    conn.execute("SELECT pg_advisory_lock(%s)", (key,))
    try:
        migrate(conn, where, time.time())
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def _ours(conn: Conn, backend: int) -> bool:
    """Whether the session ``backend`` is this process's (its owner row says so), not a reused pid."""
    row = conn.execute("SELECT pid, host FROM stele_owner WHERE backend_pid = %s", (backend,)).fetchone()
    return row is not None and int(row[0]) == os.getpid() and row[1] == socket.gethostname()


def _holder(conn: Conn, key: int) -> int | None:
    row = conn.execute(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 1",
        (key >> 32, key & 0xFFFFFFFF),
    ).fetchone()
    return int(row[0]) if row else None


def _owned(conn: Conn, where: str, backend: int | None) -> OwnedElsewhere:
    pid, host, since = -1, "?", "?"
    try:
        if conn.execute("SELECT to_regclass('stele_owner') IS NOT NULL").fetchone() == (True,):
            row = conn.execute(
                "SELECT pid, host, since FROM stele_owner WHERE backend_pid = %s", (backend or -1,)
            ).fetchone()
            if row is not None:
                pid, host, since = int(row[0]), str(row[1]), str(row[2])
    except psycopg.Error:
        pass
    who = f"pid {pid} on {host} since {since}" if pid >= 0 else f"the session of server process {backend}"
    return OwnedElsewhere(
        f"journal {where} is owned by {who}; stop that runtime first, or open the journal read-only",
        pid=pid,
        host=host,
        since=since,
    )


def _record_owner(conn: Conn) -> None:
    me = (
        os.getpid(),
        socket.gethostname(),
        datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        conn.info.backend_pid,
    )
    with conn.transaction():
        conn.execute("DELETE FROM stele_owner")
        conn.execute("INSERT INTO stele_owner(pid, host, since, backend_pid) VALUES (%s, %s, %s, %s)", me)


def check_durability(conn: Conn, durability: str, where: str) -> str:
    """The ``synchronous_commit`` for ``durability``; ``replicated`` needs synchronous standbys."""
    if durability not in SYNCHRONOUS_COMMIT:
        raise ValueError(f"durability must be one of {sorted(SYNCHRONOUS_COMMIT)}, not {durability!r}")
    if durability == "replicated":
        row = conn.execute("SELECT current_setting('synchronous_standby_names')").fetchone()
        if row is None or not str(row[0]).strip():
            raise OperationalError(
                f'durability="replicated" on PostgreSQL means synchronous replication, and {where} has no '
                "synchronous standbys (synchronous_standby_names is empty): configure them on the server, or "
                'use durability="fsync"'
            )
    return SYNCHRONOUS_COMMIT[durability]


class PgStore(PgReads):
    """An owned PostgreSQL journal: one writer thread and a few reader connections."""

    def __init__(
        self, url: str, where: str, writer: PgWriter, readers: Pool, hwm: int, actor_hwm: int, setting: str
    ) -> None:
        self._url = url
        self.synchronous_commit = setting
        """The writer session's ``synchronous_commit``, as the server reported it at open."""
        self.path = where
        """The database's URL, without its password."""
        self._writer = writer
        self._readers = readers
        self.step_hwm = hwm
        """The highest message id any durable row uses (message ids are never reused)."""
        self.actor_hwm = actor_hwm
        """The highest actor id in the registry."""
        self.replication = None
        """Replication is the database's own (always None here)."""
        self.commits = None

    @classmethod
    def open(
        cls,
        url: str,
        *,
        durability: str = "fsync",
        notify: Notify,
        payload_threshold: int | None = None,
        node: str | None = None,
    ) -> PgStore:
        """Own the database at ``url`` (creating and migrating its tables as needed); start the writer.

        Refused, with nothing written: a server that cannot be reached, refused
        credentials, a missing database, another application's tables, a newer
        Stele schema, a database another runtime owns, a ``payload_threshold``
        (payloads stored once are a SQLite journal's: see docs/payloads.md). With
        ``node``, the database is shared with other nodes (a shared hold on the
        owner lock: a single owner and nodes exclude each other) and each step's
        commit is fenced by its actor's shard lease (storage/_pg_nodes.py).
        """
        if payload_threshold is not None:
            raise ValueError(
                f"payload_threshold={payload_threshold!r}: payloads stored once are for SQLite journals; a "
                "PostgreSQL journal keeps every value in its row (the server compresses large ones, TOAST), "
                "see docs/payloads.md; leave payload_threshold unset"
            )
        where = redact(url)
        conn = connect(url)
        readers: Pool | None = None
        writer: PgWriter | None = None
        try:
            try:
                setting = check_durability(conn, durability, where)
                check_version(schema_version(conn, where), where)
                if node is None:
                    take_ownership(conn, where)
                    migrate(conn, where, time.time())
                    _record_owner(conn)
                else:
                    share_ownership(conn, where)
                    migrate_shared(conn, where)
                conn.execute(f"SET synchronous_commit = {setting}")
                shown = conn.execute("SHOW synchronous_commit").fetchone()
                row = conn.execute(
                    "SELECT (SELECT int_value FROM meta WHERE key = 'step_hwm'), "
                    "(SELECT coalesce(max(id), 0) FROM inbox), (SELECT coalesce(max(id), 0) FROM actors)"
                ).fetchone()
            except (psycopg.Error, UnicodeError) as exc:
                raise translate(exc, f"cannot prepare journal {where}") from None
            assert row is not None and shown is not None
            hwm = max(int(row[0] or 0), int(row[1]))
            actor_hwm = int(row[2])

            def reconnect(previous: int | None) -> Conn:
                fresh = connect(url, synchronous_commit=setting)
                try:
                    if node is None:
                        take_ownership(fresh, where, previous_backend=previous)
                    else:
                        share_ownership(fresh, where)
                    check_version(schema_version(fresh, where), where)
                    if node is None:
                        _record_owner(fresh)
                except BaseException:
                    fresh.close()
                    raise
                return fresh

            readers = Pool(url, READERS, where)
            writer = PgWriter(conn, notify, step_hwm=hwm, reconnect=reconnect, where=where)
            writer.node = node
            writer.start()
        except BaseException:
            if writer is not None:
                writer.stop()
            if readers is not None:
                readers.close()
            conn.close()  # the lock goes with the session
            raise
        return cls(url, where, writer, readers, hwm, actor_hwm, str(shown[0]) if shown else "?")

    @property
    def failing(self) -> StorageError | None:
        """Why commits are failing (the server unreachable), or None while they succeed."""
        return self._writer.failing

    @property
    def stats(self) -> WriterStats:
        """The writer's counters."""
        return self._writer.stats

    @property
    def backend_pid(self) -> int | None:
        """The server process of the writer's session (the fault tests end it from outside)."""
        conn = self._writer.connection
        return conn.info.backend_pid if conn is not None and not conn.closed else None

    def submit(self, units: Sequence[Unit], done: Done) -> None:
        """Queue units for the next group commit."""
        self._writer.submit(units, done)

    def submit_all(self, groups: Sequence[tuple[Sequence[Unit], Done]]) -> None:
        """Queue several submissions at once: the writer takes them into one batch."""
        self._writer.submit_all(groups)

    def _read(self, query: Callable[Concatenate[Any, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        return self._readers.run(query, *args, **kwargs)

    def close(self) -> None:
        """Commit what is queued, stop the writer, let go of the database."""
        try:
            self._writer.stop()
        finally:
            self._close_connections()

    def abandon(self) -> None:
        """Drop what is queued and let go, as a crash would (for tests)."""
        try:
            self._writer.abandon()
        finally:
            self._close_connections()

    def _close_connections(self) -> None:
        try:
            self._readers.close()
        finally:
            conn = self._writer.connection
            if conn is not None and not conn.closed:
                conn.close()  # ends the session: the owner lock goes with it


__all__ = ("PgStore", "SchemaError")
