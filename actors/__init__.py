"""What users write: actors, their handlers and appliers, and the errors they can catch."""

from ._actor import Actor, ActorDefinitionError, UnknownEventError, apply, handler
from ._context import Context
from ._errors import (
    ActorSuspendedError,
    AskTimeoutError,
    CommitUnknownError,
    EffectError,
    HandlerError,
    JournalError,
    JournalIntegrityError,
    JournalOperationalError,
    JournalOwnedError,
    MessageValidationError,
    NonDeterminismError,
    RuntimeClosedError,
    SteleError,
    UndecodableEntryError,
    UnknownActorTypeError,
    UnknownHandlerError,
)

__all__ = (
    "Actor",
    "ActorDefinitionError",
    "ActorSuspendedError",
    "AskTimeoutError",
    "CommitUnknownError",
    "Context",
    "EffectError",
    "HandlerError",
    "JournalError",
    "JournalIntegrityError",
    "JournalOperationalError",
    "JournalOwnedError",
    "MessageValidationError",
    "NonDeterminismError",
    "RuntimeClosedError",
    "SteleError",
    "UndecodableEntryError",
    "UnknownActorTypeError",
    "UnknownEventError",
    "UnknownHandlerError",
    "apply",
    "handler",
)
