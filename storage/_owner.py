"""Exclusive ownership of a journal file by one runtime process.

Two ``flock`` locks make an owner, and the kernel drops both when the owner
dies, however it dies, so a stale owner on this host is taken over without
guessing from pids:

- one on a side file ``<resolved path>-owner``: symlinks resolve to one side
  file, and it exists before the journal does (creating or restoring one);
- one on the journal file itself once it exists: a hard link has a side file
  of its own, but not an inode of its own.

Linux ``flock`` locks are independent of the POSIX locks SQLite takes on the
same file (the journal stays readable by ``Journal`` and writable by its owner;
not so on NFS, where flock is emulated with POSIX locks, but SQLite's WAL mode
does not work there anyway). What they do share is the POSIX rule that closing
*any* descriptor of a file drops every POSIX lock the process holds on it,
SQLite's included. So the descriptor that holds the journal's flock is closed
only once no connection opened through this package still has the file open
(SQLite defers its own closes the same way); until then it stays open, unlocked.

The side file's content names the owner for the error a second runtime gets.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import threading

from ._errors import OperationalError, OwnedElsewhere

FileKey = tuple[int, int]
"""``(st_dev, st_ino)``: a file, whatever the path it is reached by."""

PRIVATE_FILE = 0o600
"""The mode of every file holding journal contents or its metadata (prompts, outputs)."""


class Ownership:
    """Holds the owner lock of one journal file until :meth:`release`."""

    def __init__(self, journal_path: str) -> None:
        self.journal = os.path.realpath(journal_path)
        self.path = self.journal + "-owner"
        self._fd: int | None = None
        self._file: tuple[FileKey, int] | None = None
        self.previous: dict[str, object] | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`OwnedElsewhere` naming the live owner.

        If the journal exists, its own lock is taken too; otherwise call
        :meth:`lock_file` once it has been created.
        """
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
        except OSError as exc:
            raise OperationalError(f"cannot open owner lock {self.path}: {exc}") from None
        _make_private(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read(fd)
            os.close(fd)
            raise _owned(self.journal, owner, None) from None
        self._fd = fd
        try:
            if os.path.exists(self.journal):
                self.lock_file()
        except BaseException:
            self.release()
            raise
        self.previous = _read(fd) or None
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)

    def lock_file(self) -> None:
        """Lock the journal file itself (it must exist); the side lock must be held."""
        if self._file is not None:
            return
        try:
            fd = os.open(self.journal, os.O_RDONLY)
            key = _key(os.fstat(fd))
        except OSError as exc:
            raise OperationalError(f"cannot open journal {self.journal} to lock it: {exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _close_when_unused(key, fd)
            raise _owned(self.journal, *_holder(key)) from None
        self._file = (key, fd)

    def release(self) -> None:
        """Give the locks up (the side file stays, naming the last owner)."""
        if self._file is not None:
            (key, fd), self._file = self._file, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            _close_when_unused(key, fd)
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor drops the flock


def _owned(journal: str, owner: dict[str, object], through: str | None) -> OwnedElsewhere:
    pid = int(owner.get("pid", -1))  # type: ignore[call-overload]
    host = str(owner.get("host", "?"))
    since = str(owner.get("since", "?"))
    also = f" (the same file as {through})" if through and through != journal else ""
    return OwnedElsewhere(
        f"journal {journal}{also} is owned by pid {pid} on {host} "
        f"since {since}; stop that runtime first, or open the journal read-only",
        pid=pid,
        host=host,
        since=since,
    )


def _read(fd: int) -> dict[str, object]:
    try:
        raw = os.pread(fd, 4096, 0)
        value = json.loads(raw) if raw else {}
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _make_private(fd: int) -> None:
    with contextlib.suppress(OSError):  # a file someone else owns: theirs to tighten
        os.fchmod(fd, PRIVATE_FILE)


def _key(st: os.stat_result) -> FileKey:
    return st.st_dev, st.st_ino


def file_key(path: str) -> FileKey | None:
    """The identity of the file at ``path``, or None if there is none."""
    try:
        return _key(os.stat(path))
    except OSError:
        return None


def _holder(key: FileKey) -> tuple[dict[str, object], str | None]:
    """Who holds the flock on file ``key``, and through which journal path (Linux ``/proc``)."""
    dev, ino = key
    wanted = f"{os.major(dev):02x}:{os.minor(dev):02x}:{ino}"
    pid = -1
    try:
        with open("/proc/locks") as locks:
            for line in locks:
                fields = line.split()
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
                    pid = int(fields[4])
                    break
    except (OSError, ValueError):
        pass
    if pid <= 0:
        return {}, None
    # The owner holds its side file open: ``<its path to this file>-owner``.
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        fds = []
    links = []
    for fd in fds:
        with contextlib.suppress(OSError):  # closed meanwhile (the listing's own, for one)
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    for link in links:
        if link.endswith("-owner") and file_key(link.removesuffix("-owner")) == key:
            try:
                with open(link) as f:
                    owner = json.loads(f.read() or "{}")
            except (OSError, ValueError):
                continue
            if isinstance(owner, dict) and owner.get("pid") == pid:
                return owner, link.removesuffix("-owner")
    return {"pid": pid, "host": socket.gethostname()}, None


# -- descriptors of journal files, closed only when no connection is left ---------------

_guard = threading.Lock()
_connections: dict[FileKey, int] = {}
_parked: dict[FileKey, list[int]] = {}


def connection_opened(key: FileKey) -> None:
    """A connection of this package opened file ``key``."""
    with _guard:
        _connections[key] = _connections.get(key, 0) + 1


def connection_closed(key: FileKey) -> None:
    """A connection of this package to file ``key`` closed: close what waited for it."""
    with _guard:
        left = _connections.get(key, 0) - 1
        if left > 0:
            _connections[key] = left
            return
        _connections.pop(key, None)
        for fd in _parked.pop(key, []):
            os.close(fd)  # under the guard: no connection may open in between


def _close_when_unused(key: FileKey, fd: int) -> None:
    with _guard:
        if _connections.get(key):
            _parked.setdefault(key, []).append(fd)
        else:
            os.close(fd)
