"""The runtime's handle on its journal: ownership, the writer, and the reads it needs."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import Concatenate, ParamSpec, TypeVar

import apsw

from . import _rows
from ._commits import CommitLog
from ._errors import StorageError
from ._owner import Ownership
from ._reads import Reads
from ._replication import Replication
from ._schema import migrate
from ._sqlite import close_quietly, configure_writer, connect, translate
from ._unit import Unit
from ._writer import Done, Notify, Writer, WriterStats

P = ParamSpec("P")
T = TypeVar("T")


class Store(Reads):
    """An owned, open journal file: one writer thread and one reader connection.

    Open it with :meth:`open`. Reads are thread-safe (one at a time); writes go
    through :meth:`submit` to the writer thread.
    """

    def __init__(
        self,
        path: str,
        ownership: Ownership,
        conn: apsw.Connection,
        reader: apsw.Connection,
        writer: Writer,
        hwm: int,
        actor_hwm: int,
    ) -> None:
        self.path = path
        self._ownership = ownership
        self._conn = conn
        self._reader = reader
        self._read_lock = threading.Lock()
        self._writer = writer
        self.step_hwm = hwm
        """The highest step id any durable row uses (step ids are never reused)."""
        self.actor_hwm = actor_hwm
        """The highest actor id in the registry."""
        self.replication: Replication | None = None
        self.commits: CommitLog | None = None

    @classmethod
    def open(
        cls,
        path: str,
        *,
        durability: str = "fsync",
        notify: Notify,
        vfs: str | None = None,
        replication: Replication | None = None,
    ) -> Store:
        """Own ``path`` (creating and migrating it as needed) and start the writer.

        ``vfs`` names an APSW VFS for both connections (fault injection in tests).
        With ``replication``, Litestream is started once the file is ready and
        stopped last, after the writer.
        """
        path = os.path.abspath(path)
        ownership = Ownership(path)
        ownership.acquire()
        conn: apsw.Connection | None = None
        try:
            conn = connect(path, vfs=vfs)
            try:
                configure_writer(conn, durability)
                migrate(conn, path)
                hwm = int(_rows.meta(conn, "step_hwm") or 0)
                (top,) = conn.execute("SELECT coalesce(max(id), 0) FROM inbox").fetchone() or (0,)
                hwm = max(hwm, int(top))
                (actor_hwm,) = conn.execute("SELECT coalesce(max(id), 0) FROM actors").fetchone() or (0,)
            except (apsw.Error, UnicodeDecodeError) as exc:
                raise translate(exc, f"cannot prepare journal {path}") from None
            commits = None
            if replication is not None:
                replication.check()  # an unreachable bucket fails here, clearly, before anything starts
                commits = _track_commits(conn, path)
            reader = connect(path, readonly=True, vfs=vfs)
            writer = Writer(conn, notify, step_hwm=hwm, commits=commits)
            writer.start()
            if replication is not None and commits is not None:
                try:
                    replication.start(commits)
                except BaseException:
                    writer.stop()
                    close_quietly(reader, path)
                    raise
        except BaseException:
            if conn is not None:
                close_quietly(conn, path)
            ownership.release()
            raise
        store = cls(path, ownership, conn, reader, writer, hwm, int(actor_hwm))
        store.replication = replication
        store.commits = commits
        return store

    @property
    def failing(self) -> StorageError | None:
        """Why commits are failing (a full disk, an I/O error), or None while they succeed."""
        return self._writer.failing

    @property
    def stats(self) -> WriterStats:
        """The writer's counters."""
        return self._writer.stats

    def submit(self, units: list[Unit], done: Done) -> None:
        """Queue units for the next group commit."""
        self._writer.submit(units, done)

    def submit_all(self, groups: list[tuple[list[Unit], Done]]) -> None:
        """Queue several submissions at once: the writer takes them into one batch."""
        self._writer.submit_all(groups)

    # -- reads (any thread) -------------------------------------------------------

    def _read(self, query: Callable[Concatenate[apsw.Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        # One reader connection, used by one thread at a time.
        with self._read_lock:
            try:
                return query(self._reader, *args, **kwargs)
            except (apsw.Error, UnicodeDecodeError) as exc:
                raise translate(exc, f"cannot read {self.path}") from None

    def _iterate(
        self, query: Callable[Concatenate[apsw.Connection, P], Iterator[T]], *args: P.args, **kwargs: P.kwargs
    ) -> Iterator[T]:
        # Materialised under the lock: the connection is shared between threads.
        with self._read_lock:
            try:
                return iter(list(query(self._reader, *args, **kwargs)))
            except (apsw.Error, UnicodeDecodeError) as exc:
                raise translate(exc, f"cannot read {self.path}") from None

    # -- shutdown ------------------------------------------------------------------

    def close(self) -> None:
        """Commit what is queued, stop the writer, stop Litestream last, release the file."""
        try:
            self._writer.stop()
            if self.replication is not None:
                self.replication.stop()
        finally:
            self._close_connections()

    def abandon(self) -> None:
        """Drop what is queued and let go of the file, as a crash would (for tests)."""
        try:
            self._writer.abandon()
            if self.replication is not None:
                self.replication.kill()
        finally:
            self._close_connections(crash=True)

    def _close_connections(self, *, crash: bool = False) -> None:
        try:
            with self._read_lock:  # wait for a read in flight in another thread
                if crash:
                    # A crash leaves the WAL file as it is: no checkpoint on close,
                    # so the next open recovers from the WAL exactly as after a
                    # real crash (frames of a failed commit included).
                    for conn in (self._conn, self._reader):
                        conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
                close_quietly(self._reader, self.path)
            close_quietly(self._conn, self.path)
        finally:
            self._ownership.release()


def _track_commits(conn: apsw.Connection, path: str) -> CommitLog:
    """Record every commit for the replication monitor, and leave checkpoints to Litestream.

    Litestream holds a long read transaction and checkpoints itself; the
    application's own checkpoints while it runs once corrupted a restore in 14
    runs here (LITESTREAM.md). A WAL hook turns autocheckpoint off anyway; the
    pragma says so explicitly.
    """
    conn.execute("PRAGMA wal_autocheckpoint = 0").fetchall()
    (page_size,) = conn.execute("PRAGMA page_size").fetchone() or (4096,)
    commits = CommitLog(path + "-wal", int(page_size))
    (top,) = conn.execute("SELECT coalesce(max(position), 0) FROM journal").fetchone() or (0,)
    commits.record_existing(int(top))
    conn.set_wal_hook(commits.hook)
    return commits
