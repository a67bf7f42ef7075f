"""Storage's own errors. It imports nothing of ours; the runtime translates these."""

from __future__ import annotations


class StorageError(Exception):
    """Root of every error the storage layer raises."""


class IntegrityError(StorageError):
    """The journal holds, or would come to hold, something it must not."""


class Unconsumed(IntegrityError):
    """A unit consumed an inbox message that is no longer pending: its step ran already."""


class Unstorable(IntegrityError):
    """A unit holds a value the journal cannot store (too big, out of range, not UTF-8)."""


class OperationalError(StorageError):
    """The journal could not be read or written: I/O, full disk, busy, closed."""


class CommitUnknown(OperationalError):
    """A commit failed and reading back could not tell whether it landed."""


class ReplicaUnavailable(OperationalError):
    """Replication cannot work: Litestream missing or dead, the replica unreachable."""


class SchemaError(OperationalError):
    """The file's schema is newer than this code, or not a Stele journal."""


class OwnedElsewhere(OperationalError):
    """Another live process owns the journal."""

    def __init__(self, message: str, *, pid: int, host: str, since: str) -> None:
        super().__init__(message)
        self.pid = pid
        self.host = host
        self.since = since


class UndecodableEntry(IntegrityError):
    """A stored payload cannot be decoded as the type recorded for it."""

    def __init__(self, message: str, *, position: int, type_name: str, seq: int | None = None) -> None:
        super().__init__(message)
        self.position = position
        self.type_name = type_name
        self.seq = seq
