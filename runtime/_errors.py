"""Translate storage's errors into the ``actors`` hierarchy users catch."""

from __future__ import annotations

import storage
from actors import (
    CommitUnknownError,
    JournalError,
    JournalIntegrityError,
    JournalOperationalError,
    JournalOwnedError,
    ReplicationError,
    SteleError,
    UndecodableEntryError,
)


def translate(exc: BaseException) -> BaseException:
    """The user-facing error for ``exc`` (unchanged if it is not a storage error)."""
    if not isinstance(exc, storage.StorageError):
        return exc
    message = str(exc)
    if isinstance(exc, storage.OwnedElsewhere):
        return JournalOwnedError(message, pid=exc.pid, host=exc.host, since=exc.since)
    if isinstance(exc, storage.UndecodableEntry):
        return UndecodableEntryError(message, position=exc.position, type_name=exc.type_name)
    if isinstance(exc, storage.ReplicaUnavailable):
        return ReplicationError(message)
    if isinstance(exc, storage.CommitUnknown):
        return CommitUnknownError(message)
    if isinstance(exc, storage.IntegrityError):
        return JournalIntegrityError(message)
    if isinstance(exc, storage.OperationalError):
        return JournalOperationalError(message)
    return JournalError(message)


def raise_translated(exc: BaseException) -> SteleError:
    """Helper for ``raise raise_translated(e) from None`` at the boundary."""
    out = translate(exc)
    return out if isinstance(out, SteleError) else JournalError(str(exc))
