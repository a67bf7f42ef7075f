"""The errors themselves: one root, small precise subclasses, each with its HTTP status and code.

``status`` is what an HTTP client is told; ``code`` is stable across versions
(clients may match on it; messages are for people and may change). A subclass
that means something different from its base says so with its own pair.
"""

from __future__ import annotations

from typing import ClassVar


class SteleError(Exception):
    """Root of every error Stele raises to its users."""

    status: ClassVar[int] = 500
    """The HTTP status that says what the caller may assume."""
    code: ClassVar[str] = "error"
    """A stable name for the error (the ``error`` field of an HTTP error body)."""


# -- what a handler did ------------------------------------------------------------------


class HandlerError(SteleError):
    """The handler raised: ``ask`` re-raises it as this, with the original
    exception's type name and message (no pickle, so the same live and on replay).

    A definite outcome: the message was processed, and this is its reply.
    """

    status = 409
    code = "handler"

    def __init__(self, address: str, type_name: str, message: str) -> None:
        super().__init__(f"handler of {address} raised {type_name}: {message}")
        self.address = address
        self.type_name = type_name
        self.message = message


class EffectError(SteleError):
    """An effect raised; the handler sees this, live and on replay alike."""

    code = "effect"

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message


class NonDeterminismError(SteleError):
    """Re-running a handler over its journal did something other than what was recorded.

    Its actor is suspended; the message stays durably in the inbox until the
    actor is resumed: accepted, without a reply now.
    """

    status = 202
    code = "nondeterminism"

    def __init__(self, actor: str, position: int, recorded: str, current: str) -> None:
        super().__init__(
            f"non-determinism in {actor} at journal position {position}: "
            f"recorded {recorded}, the code now did {current}; "
            "the actor is suspended until its code matches its journal"
        )
        self.actor = actor
        self.position = position
        self.recorded = recorded
        self.current = current


class UnknownEventError(SteleError, TypeError):
    """An event was emitted that no ``@apply`` method accepts."""

    code = "unknown_event"


class ActorDefinitionError(SteleError, TypeError):
    """An actor class is malformed (bad annotations, duplicate handlers, bad State)."""

    code = "actor_definition"


class AskCycleError(SteleError):
    """An actor asked, directly or through others, an actor that is waiting on it."""

    status = 409
    code = "ask_cycle"


class PromiseError(SteleError):
    """A promise cannot be resolved (already resolved) or timed out."""

    status = 409
    code = "promise"


class UnknownTimerError(SteleError):
    """No pending timer has that id (it fired, was cancelled, or never existed)."""

    status = 404
    code = "unknown_timer"


# -- history kept and history compacted -------------------------------------------------------


class OutsideRetentionError(SteleError):
    """A journal position (or sequence number) lies before what an actor's history keeps.

    Its retention compacted the history there (or, for a fork, the actor did
    not exist yet): no state can be given for it, and none is guessed.
    ``earliest`` is the first position that can be asked about, ``floor`` the
    sequence number of the earliest state kept.
    """

    status = 410
    code = "outside_retention"

    def __init__(
        self, actor: str, earliest: int, floor: int, *, position: int | None = None, seq: int | None = None
    ) -> None:
        asked = f"position {position}" if position is not None else f"seq {seq}"
        super().__init__(
            f"{actor} keeps its history from journal position {earliest} (seq {floor}) on; "
            f"{asked} lies before it (compacted by its retention, or before the actor began): "
            f"ask about a position from {earliest} on"
        )
        self.actor = actor
        self.earliest = earliest
        self.floor = floor
        self.position = position
        self.seq = seq


class ForkError(SteleError):
    """A fork cannot be made: its source is unknown, or its new address is taken or of another type.

    Nothing was written.
    """

    status = 409
    code = "fork"


# -- input refused: nothing was accepted ---------------------------------------------------


class UnknownActorTypeError(SteleError):
    """An address names an actor type no registered class has, or is not an address."""

    status = 404
    code = "not_found"


class UnknownHandlerError(SteleError):
    """The actor has no handler of that name, or none for that message type."""

    status = 404
    code = "not_found"


class MessageValidationError(SteleError):
    """A message does not match its handler's declared type: nothing was accepted."""

    status = 422
    code = "invalid"


class UnstorableValueError(MessageValidationError, ValueError):
    """A value cannot be stored in the journal, so nothing was accepted.

    msgpack holds integers from -2**63 to 2**64 - 1, SQLite from -2**63 to
    2**63 - 1, and text only as UTF-8: a str with a lone surrogate (which
    ``json.loads``, ``os.listdir`` and ``sys.argv`` can produce) has no UTF-8
    form. The message names what could not be stored.
    """

    code = "unstorable"


class IdempotencyKeyError(MessageValidationError):
    """An idempotency key was first used for another address, handler, or kind of call.

    Nothing was accepted: the key answers only for what it was first used for.
    """

    status = 409
    code = "key_reused"


# -- refused for now: nothing was accepted; retry later -----------------------------------


class BackpressureError(SteleError):
    """Too many messages are waiting, or the journal is failing: nothing was accepted; retry later."""

    status = 503
    code = "backpressure"


class ActorSuspendedError(SteleError):
    """The actor is suspended (after non-determinism); asks fail until it is resumed."""

    status = 503
    code = "suspended"

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"{address} is suspended: {reason}")
        self.address = address
        self.reason = reason


class RuntimeClosedError(SteleError):
    """The runtime is closing or closed: the message was not accepted (or not processed, and not durable)."""

    status = 503
    code = "closed"


class LeaseLostError(SteleError):
    """This node no longer owns the actor: another node took its lease over (many nodes on one database).

    Nothing the step did was kept; a durable message stays in the inbox and
    runs on the actor's new owner.
    """

    status = 503
    code = "lease_lost"


# -- accepted, no reply now ------------------------------------------------------------------


class ReplyUnavailableError(SteleError):
    """The ask was accepted durably and will be processed, but no reply can be given now.

    Raised when the actor cannot run (suspended, or its journal cannot be
    read) or the runtime closes first: the message stays in the inbox and runs
    once the actor can. Do not resend it; ``__cause__`` says why, when known.
    """

    status = 202
    code = "reply_unavailable"


# -- outcome unknown -------------------------------------------------------------------------


class AskTimeoutError(SteleError, TimeoutError):
    """No reply arrived within the ask's timeout (the message may still be processed)."""

    status = 504
    code = "timeout"


# -- replication -------------------------------------------------------------------------------


class ReplicationError(SteleError):
    """Replication cannot work: Litestream missing or dead, the replica unreachable."""

    status = 503
    code = "replication"


class LitestreamError(ReplicationError):
    """Litestream is missing, misconfigured, or not answering."""

    code = "litestream"


class ReplicationTimeout(ReplicationError, TimeoutError):
    """A replicated acknowledgement timed out; the commit is still durable locally (accepted)."""

    status = 202
    code = "replication_timeout"


# -- the journal -------------------------------------------------------------------------------


class QueryError(SteleError):
    """A read-only SQL query over the journal was refused or failed: not valid SQL, more than one
    statement, an attempt to change something, or longer than its time limit. Nothing changed."""

    status = 400
    code = "query"


class JournalError(SteleError):
    """Something is wrong with the journal file or writing to it."""

    status = 503
    code = "unavailable"


class JournalIntegrityError(JournalError):
    """The journal holds, or would come to hold, something it must not (a duplicate, an undecodable row)."""

    code = "journal_integrity"


class UndecodableEntryError(JournalIntegrityError):
    """A stored payload cannot be decoded as the type recorded for it (or fails its checksum)."""

    status = 500
    code = "undecodable"

    def __init__(self, message: str, *, position: int, type_name: str, seq: int | None = None) -> None:
        super().__init__(message)
        self.position = position
        self.type_name = type_name
        self.seq = seq


class UnconsumedError(JournalIntegrityError):
    """A step tried to consume an inbox message that is no longer pending: it ran already."""

    code = "already_processed"


class JournalOperationalError(JournalError):
    """The journal could not be read or written (I/O, full disk, locked, closed): nothing was accepted."""


class CommitUnknownError(JournalOperationalError):
    """A commit failed and reading back could not tell whether it landed.

    The change may or may not be in the journal: resend only with an
    idempotency key.
    """

    status = 504
    code = "unknown"


class JournalOwnedError(JournalOperationalError):
    """Another live process owns the journal file."""

    status = 409
    code = "owned"

    def __init__(self, message: str, *, pid: int, host: str, since: str) -> None:
        super().__init__(message)
        self.pid = pid
        self.host = host
        self.since = since


class JournalSchemaError(JournalOperationalError):
    """The file's schema is newer than this code, or it is not a Stele journal."""

    status = 500
    code = "schema"
