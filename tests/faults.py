"""A fault-injecting APSW VFS: the default VFS, with failures on demand."""

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
        super().__init__(name, "")

    def xOpen(self, name: Any, flags: Any) -> apsw.VFSFile:
        filename = name if isinstance(name, str) or name is None else name.filename()
        return FaultFile(self, filename or "", name, flags)

    def close(self) -> None:
        self.unregister()


class FaultFile(apsw.VFSFile):
    def __init__(self, vfs: FaultVFS, filename: str, name: Any, flags: Any) -> None:
        self.vfs = vfs
        self.wal = filename.endswith("-wal")
        super().__init__("", name, flags)

    def xSync(self, flags: int) -> None:
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
        data: bytes = super().xRead(amount, offset)
        return data
