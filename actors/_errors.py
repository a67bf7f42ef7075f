"""Every error a Stele user can catch: one root, small precise subclasses.

The storage layer has its own errors (it imports nothing of ours); the runtime
translates them into the journal errors below at its boundary, so callers
catch one hierarchy.
"""

from __future__ import annotations


class SteleError(Exception):
    """Root of every error Stele raises to its users."""


class HandlerError(SteleError):
    """The handler raised: ``ask`` re-raises it as this, with the original
    exception's type name and message (no pickle, so the same live and on replay)."""

    def __init__(self, address: str, type_name: str, message: str) -> None:
        super().__init__(f"handler of {address} raised {type_name}: {message}")
        self.address = address
        self.type_name = type_name
        self.message = message


class EffectError(SteleError):
    """An effect raised; the handler sees this, live and on replay alike."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message


class NonDeterminismError(SteleError):
    """Re-running a handler over its journal did something other than what was recorded."""

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


class UnknownActorTypeError(SteleError):
    """An address names an actor type no registered class has."""


class UnknownHandlerError(SteleError):
    """The actor has no handler of that name, or none for that message type."""


class MessageValidationError(SteleError):
    """A message does not match its handler's declared type."""


class UnstorableValueError(MessageValidationError, ValueError):
    """A value cannot be stored in the journal, so nothing was accepted.

    msgpack holds integers from -2**63 to 2**64 - 1, SQLite from -2**63 to
    2**63 - 1, and text only as UTF-8: a str with a lone surrogate (which
    ``json.loads``, ``os.listdir`` and ``sys.argv`` can produce) has no UTF-8
    form. The message names what could not be stored.
    """


class ActorSuspendedError(SteleError):
    """The actor is suspended (after non-determinism); asks fail until it is resumed."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"{address} is suspended: {reason}")
        self.address = address
        self.reason = reason


class ReplyUnavailableError(SteleError):
    """The ask was accepted durably and will be processed, but no reply can be given now.

    Raised when the actor cannot run (suspended, or its journal cannot be
    read): the message stays in the inbox and runs once the actor can. Do not
    resend it; ``__cause__`` says why the actor cannot run.
    """


class AskTimeoutError(SteleError, TimeoutError):
    """No reply arrived within the ask's timeout (the message may still be processed)."""


class AskCycleError(SteleError):
    """An actor asked, directly or through others, an actor that is waiting on it."""


class PromiseError(SteleError):
    """A promise cannot be resolved (already resolved, unknown actor) or timed out."""


class UnknownTimerError(SteleError):
    """No pending timer has that id (it fired, was cancelled, or never existed)."""


class BackpressureError(SteleError):
    """Too many messages are waiting: nothing was accepted; retry later."""


class RuntimeClosedError(SteleError):
    """The runtime is closing or closed and accepts no more messages."""


class ReplicationError(SteleError):
    """Replication cannot work: Litestream missing or dead, the replica unreachable."""


class ReplicationTimeout(ReplicationError, TimeoutError):
    """A replicated acknowledgement timed out; the commit is still durable locally."""


class JournalError(SteleError):
    """Something is wrong with the journal file or writing to it."""


class JournalIntegrityError(JournalError):
    """The journal holds something it must not (a duplicate, an undecodable row)."""


class JournalOperationalError(JournalError):
    """The journal could not be read or written (I/O, full disk, locked, closed)."""


class CommitUnknownError(JournalOperationalError):
    """A commit failed and reading back could not tell whether it landed."""


class JournalOwnedError(JournalOperationalError):
    """Another live process owns the journal file."""

    def __init__(self, message: str, *, pid: int, host: str, since: str) -> None:
        super().__init__(message)
        self.pid = pid
        self.host = host
        self.since = since


class UndecodableEntryError(JournalIntegrityError):
    """A journal entry cannot be decoded as the type recorded for it."""

    def __init__(self, message: str, *, position: int, type_name: str) -> None:
        super().__init__(message)
        self.position = position
        self.type_name = type_name
