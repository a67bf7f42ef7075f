"""What storage raises: Stele's one error vocabulary, under the names storage has always used.

Storage imports nothing of ours but ``errors``, the bottom of the stack, and
raises from it directly: a caller of ``storage.Journal`` catches the same
classes as a caller of the runtime. The names below are aliases, kept because
storage's callers know them; new code may use either.
"""

from errors import (
    CommitUnknownError,
    JournalError,
    JournalIntegrityError,
    JournalOperationalError,
    JournalOwnedError,
    JournalSchemaError,
    LeaseLostError,
    LitestreamError,
    ReplicationError,
    UnconsumedError,
    UndecodableEntryError,
    UnstorableValueError,
)

LeaseLost = LeaseLostError
"""A unit's node no longer holds the lease its fence names: another node owns the actor now."""
StorageError = JournalError
"""Root of every journal error."""
IntegrityError = JournalIntegrityError
"""The journal holds, or would come to hold, something it must not."""
Unconsumed = UnconsumedError
"""A unit consumed an inbox message that is no longer pending: its step ran already."""
Unstorable = UnstorableValueError
"""A unit holds a value the journal cannot store (too big, out of range, not UTF-8): its own data."""
OperationalError = JournalOperationalError
"""The journal could not be read or written: I/O, full disk, busy, closed."""
CommitUnknown = CommitUnknownError
"""A commit failed and reading back could not tell whether it landed."""
ReplicaUnavailable = ReplicationError
"""Replication cannot work: Litestream missing or dead, the replica unreachable."""
SchemaError = JournalSchemaError
"""The file's schema is newer than this code, or not a Stele journal."""
OwnedElsewhere = JournalOwnedError
"""Another live process owns the journal."""
UndecodableEntry = UndecodableEntryError
"""A stored payload cannot be decoded as the type recorded for it."""

__all__ = (
    "CommitUnknown",
    "IntegrityError",
    "LeaseLost",
    "LitestreamError",
    "OperationalError",
    "OwnedElsewhere",
    "ReplicaUnavailable",
    "SchemaError",
    "StorageError",
    "Unconsumed",
    "UndecodableEntry",
    "Unstorable",
)
