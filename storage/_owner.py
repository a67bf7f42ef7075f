"""Exclusive ownership of a journal file by one runtime process.

An ``flock`` on a side file ``<journal>-owner`` is the lock: the kernel drops it
when the owner dies, however it dies, so a stale owner on this host is taken
over without guessing from pids. (SQLite's own POSIX locks cannot serve: closing
any descriptor of the file in the process drops them all.) The file's content
names the owner for the error message a second runtime gets.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket

from ._errors import OperationalError, OwnedElsewhere


class Ownership:
    """Holds the owner lock of one journal file until :meth:`release`."""

    def __init__(self, journal_path: str) -> None:
        self.path = journal_path + "-owner"
        self._fd: int | None = None
        self.previous: dict[str, object] | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`OwnedElsewhere` naming the live owner."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OperationalError(f"cannot open owner lock {self.path}: {exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read(fd)
            os.close(fd)
            pid = int(owner.get("pid", -1))  # type: ignore[call-overload]
            host = str(owner.get("host", "?"))
            since = str(owner.get("since", "?"))
            raise OwnedElsewhere(
                f"journal {self.path[: -len('-owner')]} is owned by pid {pid} on {host} "
                f"since {since}; stop that runtime first, or open the journal read-only",
                pid=pid,
                host=host,
                since=since,
            ) from None
        self.previous = _read(fd) or None
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (the file stays, naming the last owner)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor drops the flock


def _read(fd: int) -> dict[str, object]:
    try:
        raw = os.pread(fd, 4096, 0)
        value = json.loads(raw) if raw else {}
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
