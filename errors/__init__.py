"""Stele's one error vocabulary: every error any part of Stele raises to a caller.

``storage``, ``actors`` and ``runtime`` all raise from here, and this package
imports nothing of theirs, so each layer can. ``actors`` re-exports the
errors a user catches; ``storage`` keeps its older names as aliases.

Every error knows its HTTP status and a stable ``code``, so the HTTP layer
maps them in one place (``error.status``, ``error.code``), and clients can
tell three situations apart (see ``docs/failures.md``):

- refused: nothing was accepted (4xx, and 503 "retry later");
- accepted: the message is durably in the inbox and will run (202), or ran
  and its handler raised (409);
- unknown: it may or may not have been accepted (504): resend only under the
  same idempotency key.
"""

from ._vocabulary import (
    ActorDefinitionError,
    ActorSuspendedError,
    AskCycleError,
    AskTimeoutError,
    BackpressureError,
    CommitUnknownError,
    EffectError,
    ForkError,
    HandlerError,
    IdempotencyKeyError,
    JournalError,
    JournalIntegrityError,
    JournalOperationalError,
    JournalOwnedError,
    JournalSchemaError,
    LeaseLostError,
    LitestreamError,
    MessageValidationError,
    NonDeterminismError,
    OutsideRetentionError,
    PromiseError,
    QueryError,
    ReplicationError,
    ReplicationTimeout,
    ReplyUnavailableError,
    RuntimeClosedError,
    SteleError,
    UnconsumedError,
    UndecodableEntryError,
    UnknownActorTypeError,
    UnknownEventError,
    UnknownHandlerError,
    UnknownTimerError,
    UnstorableValueError,
)

__all__ = (
    "ActorDefinitionError",
    "ActorSuspendedError",
    "AskCycleError",
    "AskTimeoutError",
    "BackpressureError",
    "CommitUnknownError",
    "EffectError",
    "ForkError",
    "HandlerError",
    "IdempotencyKeyError",
    "JournalError",
    "JournalIntegrityError",
    "JournalOperationalError",
    "JournalOwnedError",
    "JournalSchemaError",
    "LeaseLostError",
    "LitestreamError",
    "MessageValidationError",
    "NonDeterminismError",
    "OutsideRetentionError",
    "PromiseError",
    "QueryError",
    "ReplicationError",
    "ReplicationTimeout",
    "ReplyUnavailableError",
    "RuntimeClosedError",
    "SteleError",
    "UnconsumedError",
    "UndecodableEntryError",
    "UnknownActorTypeError",
    "UnknownEventError",
    "UnknownHandlerError",
    "UnknownTimerError",
    "UnstorableValueError",
)
