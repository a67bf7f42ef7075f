"""Opening connections the way Stele needs them, and translating APSW errors."""

from __future__ import annotations

import logging
import threading
import urllib.parse

import apsw

from errors import SteleError

from ._errors import IntegrityError, OperationalError, Unstorable
from ._owner import FileKey, connection_closed, connection_opened, file_key

log = logging.getLogger("stele.storage")

BUSY_TIMEOUT_MS = 5000
"""Every connection waits this long for a lock (Litestream's too) before failing."""

SYNCHRONOUS = {"fsync": "FULL", "normal": "NORMAL"}
"""Durability level -> ``PRAGMA synchronous``."""


POWERSAFE_OVERWRITE = False
"""Whether to trust the disk not to tear a sector it is writing (SQLite's ``psow``).

SQLite assumes it does by default, and then starts a commit's WAL frames in the
sector that holds the previous commit's last frame. A power cut that tears that
sector takes the previous, acknowledged commit with it (and every commit after
it: WAL recovery stops at the first bad checksum). The power-loss tests measured
it: with torn sectors, 8 of 124 crash points lost acknowledged messages with
``psow=1`` and none of 136 with ``psow=0``. So Stele pads each commit to a
sector boundary, at the price of about one more frame per commit (see the
benchmark's ``psow`` figures).
"""


def uri(path: str) -> str:
    """The ``file:`` URI that opens ``path`` with Stele's parameters."""
    return f"file:{urllib.parse.quote(path)}?psow={int(POWERSAFE_OVERWRITE)}"


_files_guard = threading.Lock()
_files: dict[int, FileKey] = {}  # id(connection) -> the file it opened


def connect(path: str, *, readonly: bool = False, vfs: str | None = None) -> apsw.Connection:
    """Open ``path`` with a busy timeout; read-only opening never creates or writes.

    ``vfs`` names a registered APSW VFS (the fault-injecting ones of the tests).
    Close it with :func:`close` or :func:`close_quietly`: the owner lock's
    descriptor waits for that (see ``_owner``).
    """
    flags = apsw.SQLITE_OPEN_READONLY if readonly else apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
    flags |= apsw.SQLITE_OPEN_URI
    try:
        conn = apsw.Connection(uri(path), flags=flags, vfs=vfs) if vfs else apsw.Connection(uri(path), flags=flags)
        conn.set_busy_timeout(BUSY_TIMEOUT_MS)
    except apsw.Error as exc:
        raise translate(exc, f"cannot open journal {path}") from None
    key = file_key(path)
    if key is not None:
        connection_opened(key)
        with _files_guard:
            _files[id(conn)] = key
    return conn


def close(conn: apsw.Connection) -> None:
    """Close ``conn`` (raising what closing raises)."""
    conn.close()
    with _files_guard:
        key = _files.pop(id(conn), None)
    if key is not None:
        connection_closed(key)


def configure_writer(conn: apsw.Connection, durability: str) -> None:
    """Settings of the one write connection."""
    if durability not in SYNCHRONOUS:
        raise ValueError(f"durability must be one of {sorted(SYNCHRONOUS)}, not {durability!r}")
    if _empty(conn):
        # A new journal gives the pages compaction frees back to the file system
        # in bounded steps (PRAGMA incremental_vacuum; see docs/history.md). The
        # mode can only be chosen before the first table, and before WAL mode
        # writes the file's header: later it takes a VACUUM of the whole file.
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    # journal_mode returns a row: fetch it, or APSW leaves the statement pending.
    conn.execute("PRAGMA journal_mode = WAL").fetchall()
    conn.execute(f"PRAGMA synchronous = {SYNCHRONOUS[durability]}")
    # The (actor, seq) index touches about one page per actor per commit; a large
    # cache keeps those pages hot between group commits (measured by the benchmarks).
    conn.execute("PRAGMA cache_size = -65536")
    # Checkpoints stay automatic (PASSIVE, 1000 pages) for now; when Litestream
    # supervises the file it takes checkpointing over (see _store._track_commits).


def _empty(conn: apsw.Connection) -> bool:
    row = conn.execute("PRAGMA page_count").fetchone()
    return not row or not row[0]


def close_quietly(conn: apsw.Connection, path: str) -> None:
    """Close ``conn``; a failure (the checkpoint SQLite runs on close) is logged, not raised.

    Everything committed is in the WAL by then: a checkpoint that fails on a
    failing disk loses nothing, and the next open recovers from the WAL. Raising
    would hide the error that brought the caller here, or report a loss that
    did not happen.
    """
    try:
        close(conn)
    except apsw.Error as exc:
        log.warning("closing %s: %s: %s (nothing is lost: the next open recovers from the WAL)",
                    path, type(exc).__name__, exc)  # fmt: skip


def translate(exc: BaseException, context: str) -> SteleError:
    """Map an APSW error to storage's PEP 249-style split: integrity vs operational.

    Anything but an APSW error comes from binding a unit's values (an int
    beyond 64 bits, a str with a lone surrogate, a type SQLite has no column
    for): the unit's own data, which no retry can store.
    """
    if isinstance(exc, UnicodeDecodeError):  # a garbled TEXT column: the file is corrupt
        return IntegrityError(f"{context}: a text value is not valid UTF-8 (corrupt journal): {exc}")
    detail = f"{context}: {type(exc).__name__}: {exc}"
    if isinstance(exc, apsw.TooBigError | apsw.RangeError) or not isinstance(exc, apsw.Error):
        # The unit's own data: retrying it can never succeed.
        return Unstorable(f"{context}: a value cannot be stored: {type(exc).__name__}: {exc}")
    if isinstance(exc, apsw.ConstraintError | apsw.CorruptError | apsw.NotADBError | apsw.MismatchError):
        return IntegrityError(detail)
    return OperationalError(detail)
