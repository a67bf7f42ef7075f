"""The runtime's handle on its journal: ownership, the writer, and the reads it needs."""

from __future__ import annotations

import datetime
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Concatenate, ParamSpec, TypeVar

import apsw

from . import _rows
from ._commits import CommitLog
from ._contract import Done, Notify, PutMeta, Unit, WriterStats
from ._errors import OperationalError, StorageError
from ._owner import PRIVATE_FILE, Ownership
from ._payload_store import PayloadWriter
from ._payloads import DEFAULT_THRESHOLD
from ._reads import SqliteReads
from ._replication import Replication
from ._restore import SIDE_FILES, move_into_place, remove_with_side_files
from ._schema import migrate
from ._sqlite import close_quietly, configure_writer, connect, translate
from ._writer import Writer

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger("stele.storage")

NEW_WAL_WAIT_S = 5.0


class Store(SqliteReads):
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
        self._vfs: str | None = None
        self._closing = False

    @classmethod
    def open(
        cls,
        path: str,
        *,
        durability: str = "fsync",
        notify: Notify,
        vfs: str | None = None,
        replication: Replication | None = None,
        restore: Callable[[str], bool] | None = None,
        payload_threshold: int | None = DEFAULT_THRESHOLD,
    ) -> Store:
        """Own ``path`` (creating and migrating it as needed) and start the writer.

        ``vfs`` names an APSW VFS for both connections (fault injection in tests).
        With ``replication``, Litestream is started once the file is ready and
        stopped last, after the writer. ``restore``, called only when the
        journal is missing and only once it is owned, restores it into the
        temporary path it is given and returns False if there was nothing to
        restore; the file is then moved into place. ``payload_threshold``:
        values longer than this many bytes are stored once, as chunks (None:
        never; see docs/payloads.md). A WAL or shared-memory
        file left beside a missing journal is set aside, never replayed.

        Whatever fails after the lock is taken, nothing is left behind: the
        writer, Litestream and every thread they started are stopped and the
        lock is released before the error is raised.
        """
        path = os.path.realpath(path)
        payloads = PayloadWriter(payload_threshold)  # a bad threshold fails before anything is taken
        ownership = Ownership(path)
        ownership.acquire()
        conn: apsw.Connection | None = None
        reader: apsw.Connection | None = None
        writer: Writer | None = None
        try:
            if replication is not None:
                replication.claim()  # a Litestream left by an earlier owner stops before anything changes
            if not os.path.exists(path):
                _set_aside_stale(path)
                if restore is not None:
                    _restore_missing(path, restore)
                _create_private(path)  # SQLite gives the WAL and shared-memory files this mode
                ownership.lock_file()
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
            writer = Writer(conn, notify, step_hwm=hwm, commits=commits, payloads=payloads)
            writer.start()
            store = cls(path, ownership, conn, reader, writer, hwm, int(actor_hwm))
            store._vfs = vfs
            if replication is not None and commits is not None:
                replication.start(commits, truncate_wal=store._truncate_wal)
        except BaseException:
            try:
                if writer is not None:
                    writer.stop()
                if replication is not None:
                    replication.stop()
            finally:
                for c in (reader, conn):
                    if c is not None:
                        close_quietly(c, path)
                ownership.release()
            raise
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

    def writer_pragma(self, name: str) -> object:
        """A setting of the writer's own connection (``synchronous``, ``journal_mode``,
        ``wal_autocheckpoint``): per connection, so no other connection can read it."""
        if not name.isidentifier():
            raise ValueError(f"not a pragma name: {name!r}")
        row = self._conn.execute(f"PRAGMA {name}").fetchone()
        return row[0] if row else None

    def submit(self, units: Sequence[Unit], done: Done) -> None:
        """Queue units for the next group commit."""
        self._writer.submit(units, done)

    def submit_all(self, groups: Sequence[tuple[Sequence[Unit], Done]]) -> None:
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
        self._closing = True
        try:
            self._writer.stop()
            if self.replication is not None:
                self.replication.stop()
        finally:
            self._close_connections()

    def abandon(self) -> None:
        """Drop what is queued and let go of the file, as a crash would (for tests)."""
        self._closing = True
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

    # -- bounding the WAL while Litestream is down -----------------------------------

    def _truncate_wal(self) -> bool:
        """Checkpoint the whole WAL into the journal and truncate it; True if done.

        Called by the replication supervisor only while Litestream is down, and
        never while it could start: a Litestream that finds the WAL truncated
        behind its back (shorter than its last position, or frames with other
        salts there) takes a full snapshot when it starts again, so the replica
        stays complete. A WAL merely restarted (a PASSIVE checkpoint) can leave
        an old frame at that position that passes its check, and the frames
        after it are then never replicated.
        """
        if self._closing:
            return False
        conn = connect(self.path, vfs=self._vfs)
        try:
            conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()  # copies without blocking the writer
            (busy, _, _) = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone() or (1, 0, 0)
        except apsw.Error as exc:
            log.warning("cannot checkpoint the WAL of %s: %s: %s", self.path, type(exc).__name__, exc)
            return False
        finally:
            close_quietly(conn, self.path)
        if busy:
            return False
        self._start_new_wal()
        return True

    def _start_new_wal(self) -> None:
        """Have the writer start the new WAL, so the commit record knows its salts first.

        Otherwise Litestream's own first write could start it, and the snapshot
        it then takes would name a WAL the record has never seen: the commits
        it holds would stay "at risk".
        """
        commits = self.commits
        if commits is None or self._closing:
            return
        self._writer.submit([Unit(ops=[PutMeta("wal_truncated_at", time.time())])], lambda outcomes: None)
        deadline = time.monotonic() + NEW_WAL_WAIT_S
        while not commits.knows_current_wal() and not self._closing and time.monotonic() < deadline:
            time.sleep(0.01)


def _create_private(path: str) -> None:
    """Create an empty journal file readable by its owner only, whatever the umask."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        return  # restored: already private
    except OSError as exc:
        raise OperationalError(f"cannot create journal {path}: {exc}") from None
    os.close(fd)


def _set_aside_stale(path: str) -> None:
    """Rename what a deleted journal left beside it, so SQLite never replays it onto another file.

    SQLite would apply a WAL left there to a new (or restored) journal: pages of
    one file over another. Nothing is deleted: the files keep a suffix that says
    what they are, and a warning names both paths.
    """
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    meta_dir = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + "-litestream")
    for stale in [path + suffix for suffix in SIDE_FILES] + [meta_dir]:
        if not os.path.lexists(stale):
            continue
        aside = f"{stale}.stale-{stamp}"
        n = 1
        while os.path.lexists(aside):
            n += 1
            aside = f"{stale}.stale-{stamp}-{n}"
        try:
            os.rename(stale, aside)
        except OSError as exc:
            raise OperationalError(
                f"journal {path} is missing but {stale} is there, and it cannot be set aside: {exc}; "
                "move it away, then start again"
            ) from None
        log.warning("journal %s is missing: set %s aside as %s (it belongs to no file now)", path, stale, aside)


def _restore_missing(path: str, restore: Callable[[str], bool]) -> None:
    """Restore into a temporary file beside ``path``, then move it into place (the caller owns ``path``)."""
    temp = f"{path}.restoring-{uuid.uuid4().hex[:8]}"
    try:
        if restore(temp):
            move_into_place(temp, path)
    finally:
        remove_with_side_files(temp)


def _track_commits(conn: apsw.Connection, path: str) -> CommitLog:
    """Record every commit for the replication monitor, and leave checkpoints to Litestream.

    Litestream holds a long read transaction and checkpoints itself; with the
    application checkpointing too, a Litestream killed and restarted once
    produced a restore that failed integrity_check (1 run in 14, measured with
    0.5.17). A WAL hook turns autocheckpoint off anyway; the pragma says so
    explicitly. While Litestream is down, ``Store._truncate_wal`` bounds the WAL.
    """
    conn.execute("PRAGMA wal_autocheckpoint = 0").fetchall()
    (page_size,) = conn.execute("PRAGMA page_size").fetchone() or (4096,)
    commits = CommitLog(path + "-wal", int(page_size))
    (top,) = conn.execute("SELECT coalesce(max(position), 0) FROM journal").fetchone() or (0,)
    commits.record_existing(int(top))
    conn.set_wal_hook(commits.hook)
    return commits
