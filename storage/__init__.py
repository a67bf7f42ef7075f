"""What remembers: the journal (a SQLite file, or a PostgreSQL database), its writer, its codec
and read-only access.

``storage`` imports nothing else of Stele's; it stores typed rows and bytes.
"""

from ._backoff import Backoff
from ._codec import Codec, decode_untyped
from ._contract import (
    ActorInfo,
    ActorRow,
    ActorStatus,
    Backend,
    Bury,
    CancelTimer,
    DeadLetter,
    Done,
    DropDeadLetter,
    Entry,
    EntryKind,
    EntryRow,
    EventRow,
    ForgetKey,
    Idempotent,
    InboxRow,
    MarkAttempt,
    Notify,
    Op,
    Outcome,
    Pending,
    PutMeta,
    PutPromise,
    Reads,
    RecordKey,
    Revive,
    SetStatus,
    Snapshot,
    SnapshotInfo,
    SnapshotRow,
    Sync,
    TakePromise,
    Unit,
    WriterStats,
)
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
from ._journal import Journal, integrity_check
from ._litestream import Litestream
from ._open import open_backend
from ._pg_connect import is_postgres, redact
from ._pg_store import PgStore
from ._replica import ReplicaTarget
from ._replication import DEFAULT_MAX_WAL_BYTES, Replication, ReplicationStatus
from ._restore import RestoreReport, restore
from ._rows import corrupt
from ._schema import SCHEMA_VERSION
from ._store import Store
from ._transfer import CopyReport, copy_journal

__all__ = (
    "DEFAULT_MAX_WAL_BYTES",
    "SCHEMA_VERSION",
    "ActorInfo",
    "ActorRow",
    "ActorStatus",
    "Backend",
    "Backoff",
    "Bury",
    "CancelTimer",
    "Codec",
    "CommitUnknown",
    "CopyReport",
    "DeadLetter",
    "Done",
    "DropDeadLetter",
    "Entry",
    "EntryKind",
    "EntryRow",
    "EventRow",
    "ForgetKey",
    "Idempotent",
    "InboxRow",
    "IntegrityError",
    "Journal",
    "Litestream",
    "LitestreamError",
    "MarkAttempt",
    "Notify",
    "Op",
    "OperationalError",
    "Outcome",
    "OwnedElsewhere",
    "Pending",
    "PgStore",
    "PutMeta",
    "PutPromise",
    "Reads",
    "RecordKey",
    "ReplicaTarget",
    "ReplicaUnavailable",
    "Replication",
    "ReplicationStatus",
    "RestoreReport",
    "Revive",
    "SchemaError",
    "SetStatus",
    "Snapshot",
    "SnapshotInfo",
    "SnapshotRow",
    "StorageError",
    "Store",
    "Sync",
    "TakePromise",
    "Unconsumed",
    "UndecodableEntry",
    "Unit",
    "Unstorable",
    "WriterStats",
    "copy_journal",
    "corrupt",
    "decode_untyped",
    "integrity_check",
    "is_postgres",
    "open_backend",
    "redact",
    "restore",
)
