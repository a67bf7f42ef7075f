"""A power-loss VFS: the default VFS, which remembers what is not yet durable.

Every write and truncation since a file's last ``xSync`` is at risk. At a chosen
crash point (the N-th sync or the N-th write of the process) the VFS simulates a
power cut, the way SQLite's own crash tests do (``test6.c``): each sector
written since the last sync is *kept*, *dropped* (its durable contents come
back) or *garbled* (the whole sector turns to noise, bytes that were synced
before included: a disk without the powersafe-overwrite property), an unsynced
truncation is kept or undone; then the process stops at once, before anything
else reaches the disk.

Deletions and directory entries are not modelled (SQLite deletes nothing a WAL
journal needs), nor is the ``-shm`` file: SQLite rebuilds it on the first open
after a crash.
"""

# ruff: noqa: N802  (APSW names VFS methods xOpen, xSync, ...)

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import apsw

Policy = Literal["drop", "keep", "garble", "mixed"]
"""What becomes of unsynced sectors at the cut; ``mixed`` picks one per sector."""

CUT_EXIT = 77
"""The exit status of a process whose power was cut."""

SECTOR = 4096
"""The sector size SQLite's unix VFS reports, so the unit a torn write garbles."""


@dataclass
class _Pending:
    """What one file has not made durable since its last sync."""

    durable_size: int
    sectors: dict[int, bytes] = field(default_factory=dict)
    """Sector number -> its durable contents (shorter than a sector at the end of the file)."""
    truncated: bool = False


class PowerLossVFS(apsw.VFS):
    """Inherits the default VFS; cuts the power at the ``crash_at``-th sync or write.

    ``crash_on`` says which operations count. Counting runs from the VFS's
    creation, over every file; with ``crash_at=None`` nothing is cut and the
    counters tell how many crash points a workload offers. ``on_cut`` runs after
    the files have been damaged; it defaults to leaving the process at once.
    """

    def __init__(
        self,
        name: str = "powerloss",
        *,
        crash_on: Literal["sync", "write"] = "sync",
        crash_at: int | None = None,
        policy: Policy = "mixed",
        seed: int = 0,
        on_cut: Callable[[], None] = lambda: os._exit(CUT_EXIT),
        psow: bool | None = None,
    ) -> None:
        self.name = name
        self.crash_on = crash_on
        self.crash_at = crash_at
        self.policy = policy
        self.rng = random.Random(seed)
        self.on_cut = on_cut
        self.psow = psow
        """None: report what the file was opened with; True/False: claim or deny powersafe overwrite."""
        self.syncs = 0
        self.writes = 0
        self.damage: dict[str, int] = {"kept": 0, "dropped": 0, "garbled": 0}
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        super().__init__(name, "")

    def xOpen(self, name: Any, flags: Any) -> apsw.VFSFile:
        filename = name if isinstance(name, str) or name is None else name.filename()
        return PowerLossFile(self, filename, name, flags)

    def close(self) -> None:
        """Unregister the VFS."""
        self.unregister()

    # -- bookkeeping, called by the files ---------------------------------------

    def before_write(self, path: str, offset: int, length: int) -> None:
        with self._lock:
            self.writes += 1
            if self.crash_on == "write" and self.writes == self.crash_at:
                self._cut()
            pending = self._pending_for(path)
            first, last = offset // SECTOR, (offset + length - 1) // SECTOR
            for sector in range(first, last + 1):
                self._remember(path, pending, sector)

    def before_truncate(self, path: str, size: int) -> None:
        with self._lock:
            pending = self._pending_for(path)
            current = os.path.getsize(path)
            for sector in range(size // SECTOR, (current + SECTOR - 1) // SECTOR):
                self._remember(path, pending, sector)
            pending.truncated = True

    def before_sync(self, path: str) -> None:
        with self._lock:
            self.syncs += 1
            if self.crash_on == "sync" and self.syncs == self.crash_at:
                self._cut()  # the power fails during this sync: nothing of it is durable

    def after_sync(self, path: str) -> None:
        with self._lock:
            self._pending[path] = _Pending(os.path.getsize(path))

    def _pending_for(self, path: str) -> _Pending:
        pending = self._pending.get(path)
        if pending is None:
            size = os.path.getsize(path) if os.path.exists(path) else 0
            pending = self._pending[path] = _Pending(size)
        return pending

    @staticmethod
    def _remember(path: str, pending: _Pending, sector: int) -> None:
        if sector in pending.sectors:
            return
        start = sector * SECTOR
        durable = max(0, min(SECTOR, pending.durable_size - start))
        with open(path, "rb") as f:  # not yet written: the file still holds the durable bytes
            f.seek(start)
            pending.sectors[sector] = f.read(durable)

    # -- the cut ----------------------------------------------------------------

    def _cut(self) -> None:
        for path, pending in self._pending.items():
            if os.path.exists(path):
                self._damage(path, pending)
        self.on_cut()

    def _damage(self, path: str, pending: _Pending) -> None:
        fd = os.open(path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            end = pending.durable_size
            if pending.truncated:
                if self.rng.random() < 0.5:
                    size = max(size, pending.durable_size)  # the truncation never reached the disk
                else:
                    end = min(end, size)
            for sector, durable in sorted(pending.sectors.items()):
                start = sector * SECTOR
                fate = self.policy if self.policy != "mixed" else self.rng.choice(("keep", "drop", "garble"))
                if start >= size and fate != "drop":
                    fate = "drop"  # truncated away, and the truncation stands
                if fate == "keep":
                    self.damage["kept"] += 1
                    end = max(end, min(size, start + SECTOR))
                    continue
                if fate == "garble":
                    self.damage["garbled"] += 1
                    os.pwrite(fd, self.rng.randbytes(SECTOR), start)
                    end = max(end, start + SECTOR)
                else:
                    self.damage["dropped"] += 1
                    # Bytes the disk never held read back as zeros, up to what survives.
                    zeros = max(0, min(SECTOR, size - start) - len(durable))
                    os.pwrite(fd, durable + bytes(zeros), start)
            os.ftruncate(fd, end)
        finally:
            os.close(fd)


class PowerLossFile(apsw.VFSFile):
    """A file of the default VFS that reports its writes, truncations and syncs."""

    def __init__(self, vfs: PowerLossVFS, filename: str | None, name: Any, flags: Any) -> None:
        self.vfs = vfs
        # Temporary files (no name) cannot outlive a crash: they are not tracked.
        self.path = os.path.abspath(filename) if filename else None
        super().__init__("", name, flags)

    def xDeviceCharacteristics(self) -> int:
        flags: int = super().xDeviceCharacteristics()
        if self.vfs.psow is True:
            flags |= apsw.SQLITE_IOCAP_POWERSAFE_OVERWRITE
        elif self.vfs.psow is False:
            flags &= ~apsw.SQLITE_IOCAP_POWERSAFE_OVERWRITE
        return flags

    def xWrite(self, data: Any, offset: int) -> None:
        if self.path is not None:
            self.vfs.before_write(self.path, offset, len(data))
        super().xWrite(data, offset)

    def xTruncate(self, size: int) -> None:
        if self.path is not None:
            self.vfs.before_truncate(self.path, size)
        super().xTruncate(size)

    def xSync(self, flags: int) -> None:
        if self.path is not None:
            self.vfs.before_sync(self.path)
        super().xSync(flags)
        if self.path is not None:
            self.vfs.after_sync(self.path)
