"""What remembers: the journal file, its writer, its codec and read-only access.

``storage`` imports nothing else of Stele's; it stores typed rows and bytes.
"""

from ._codec import Codec, decode_untyped
from ._errors import (
    CommitUnknown,
    IntegrityError,
    LitestreamError,
    OperationalError,
    OwnedElsewhere,
    ReplicaUnavailable,
    SchemaError,
    StorageError,
    Unconsumed,
    UndecodableEntry,
    Unstorable,
)
from ._journal import Journal
from ._litestream import Litestream
from ._reads import Reads
from ._replica import ReplicaTarget
from ._replication import DEFAULT_MAX_WAL_BYTES, Replication, ReplicationStatus
from ._restore import RestoreReport, restore
from ._rows import ActorInfo, DeadLetter, Entry, EventRow, Idempotent, Pending, Snapshot, SnapshotInfo, corrupt
from ._schema import SCHEMA_VERSION
from ._store import Store
from ._unit import Unit
from ._writer import Done, Outcome, WriterStats

__all__ = (
    "DEFAULT_MAX_WAL_BYTES",
    "SCHEMA_VERSION",
    "ActorInfo",
    "Codec",
    "CommitUnknown",
    "DeadLetter",
    "Done",
    "Entry",
    "EventRow",
    "Idempotent",
    "IntegrityError",
    "Journal",
    "Litestream",
    "LitestreamError",
    "OperationalError",
    "Outcome",
    "OwnedElsewhere",
    "Pending",
    "Reads",
    "ReplicaTarget",
    "ReplicaUnavailable",
    "Replication",
    "ReplicationStatus",
    "RestoreReport",
    "SchemaError",
    "Snapshot",
    "SnapshotInfo",
    "StorageError",
    "Store",
    "Unconsumed",
    "UndecodableEntry",
    "Unit",
    "Unstorable",
    "WriterStats",
    "corrupt",
    "decode_untyped",
    "restore",
)
