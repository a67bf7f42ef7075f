"""A fault-injecting APSW VFS: the default VFS, with failures on demand.

Two ways to ask for failures: counters for the next syncs or reads (the
commit-failure tests), or the N-th I/O operation of the journal's files, once
(transient) or from then on until ``heal()`` (persistent), as an I/O error or,
for writes, as a full disk (the I/O-error sweep).
"""

# ruff: noqa: N802  (APSW names VFS methods xOpen, xSync, ...)

from __future__ import annotations

from typing import Any

import apsw


class FaultVFS(apsw.VFS):
    """Inherits the default VFS; fails the next ``sync_failures`` syncs of a WAL file."""

    def __init__(self, name: str = "fault") -> None:
        self.name = name
        self.sync_failures = 0
        self.read_failures = 0
        self.reads_fail_after_sync = 0
        """When a sync failure is injected, fail this many reads next."""
        self.injected = 0
        self.ops = 0
        """I/O operations on the database and WAL files so far (reads, writes, syncs, truncations)."""
        self.fail_at: int | None = None
        self.persistent = False
        self.full = False
        """Fail as a full disk (writes only count) instead of an I/O error."""
        self._failing = False
        super().__init__(name, "")

    def arm(self, at: int, *, persistent: bool = False, full: bool = False) -> None:
        """Fail the ``at``-th counted operation from now (and all after it if ``persistent``)."""
        self.ops, self.fail_at, self.persistent, self.full, self._failing = 0, at, persistent, full, False

    def heal(self) -> None:
        """The disk works again."""
        self.fail_at, self._failing = None, False

    @property
    def failing(self) -> bool:
        """Whether a persistent failure is in force."""
        return self._failing

    def operation(self, kind: str) -> None:
        """Count one operation; raise if it is to fail."""
        if self.full and kind != "write":
            return
        self.ops += 1
        if self._failing or self.ops == self.fail_at:
            self._failing = self.persistent
            self.injected += 1
            if self.full:
                raise apsw.FullError("injected: database or disk is full")
            raise apsw.IOError(f"injected I/O error on {kind}")

    def xOpen(self, name: Any, flags: Any) -> apsw.VFSFile:
        filename = name if isinstance(name, str) or name is None else name.filename()
        return FaultFile(self, filename or "", name, flags)

    def close(self) -> None:
        self.unregister()


class FaultFile(apsw.VFSFile):
    def __init__(self, vfs: FaultVFS, filename: str, name: Any, flags: Any) -> None:
        self.vfs = vfs
        self.wal = filename.endswith("-wal")
        self.counted = bool(filename) and not filename.endswith("-journal")
        super().__init__("", name, flags)

    def xWrite(self, data: Any, offset: int) -> None:
        if self.counted:
            self.vfs.operation("write")
        super().xWrite(data, offset)

    def xTruncate(self, size: int) -> None:
        if self.counted:
            self.vfs.operation("truncate")
        super().xTruncate(size)

    def xSync(self, flags: int) -> None:
        if self.counted:
            self.vfs.operation("sync")
        if self.wal and self.vfs.sync_failures > 0:
            self.vfs.sync_failures -= 1
            self.vfs.injected += 1
            self.vfs.read_failures += self.vfs.reads_fail_after_sync
            raise apsw.IOError("injected fsync failure")
        super().xSync(flags)

    def xRead(self, amount: int, offset: int) -> bytes:
        if self.vfs.read_failures > 0:
            self.vfs.read_failures -= 1
            self.vfs.injected += 1
            raise apsw.IOError("injected read failure")
        if self.counted:
            self.vfs.operation("read")
        data: bytes = super().xRead(amount, offset)
        return data
