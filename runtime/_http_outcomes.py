"""What an HTTP client is told about its message: one table from runtime outcome to status.

A status must never tell a client that a message was not accepted when it
was (the client would resend it and run it twice), nor that it was accepted
when it may not have been. Every outcome of ``POST /actors/{type}/{key}/{handler}``
is one row of this table:

======  =================  ==========================================================================
status  ``error`` / field  meaning
======  =================  ==========================================================================
200     (the reply)        the handler ran and replied
202     ``accepted: true`` a tell durably in the inbox; or an ask durably accepted whose reply cannot
                           be given now (``outcome: "unknown"``, ``reason``: ``reply_unavailable``,
                           ``replication_timeout``, ``suspended``, ``shutdown``). Do not resend it
                           as new; resend with the same ``Idempotency-Key`` later to learn its reply
400     ``malformed``      the request is malformed (not JSON, a bad parameter or header): nothing accepted
401     ``unauthorized``   no valid bearer token: nothing accepted
404     ``not_found``      no such actor type or handler: nothing accepted
409     ``handler``        the handler ran and raised (a definite outcome; ``type`` and ``message`` say what)
413     ``too_large``      the body is too large: nothing accepted
415     ``unsupported``    the body is not declared ``application/json``: nothing accepted
421     ``misdirected``    the Host header names a host this server does not serve: nothing accepted
422     ``invalid``        the body does not match the handler's message type: nothing accepted
503     ``backpressure``,  refused, nothing accepted: mailboxes full, the journal failing, the actor
        ``unavailable``,   suspended, the server closing. Retry later (``Retry-After``)
        ``suspended``,
        ``closed``
504     ``unknown``        may or may not have been accepted (a commit of unknown outcome, an ask that
                           timed out before it became durable, an ask cut short by shutdown): resend
                           only with an ``Idempotency-Key``
======  =================  ==========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
from starlette.responses import Response

from actors import (
    ActorSuspendedError,
    AskTimeoutError,
    BackpressureError,
    CommitUnknownError,
    HandlerError,
    JournalError,
    MessageValidationError,
    NonDeterminismError,
    ReplicationError,
    ReplicationTimeout,
    ReplyUnavailableError,
    RuntimeClosedError,
    UnknownActorTypeError,
    UnknownHandlerError,
)

_json = msgspec.json.Encoder()

RETRY_AFTER_S = 1
"""What a refusal (503) suggests as ``Retry-After``: refusals are transient by design."""


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: status, JSON body, extra headers."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def response(answer: Answer) -> Response:
    """``answer`` as a Starlette response (JSON)."""
    return Response(
        _json.encode(answer.body), status_code=answer.status, media_type="application/json", headers=answer.headers
    )


def error(status: int, kind: str, message: str, **extra: Any) -> Answer:
    """An answer carrying ``{"error": kind, "message": message, ...}``."""
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else {}
    return Answer(status, {"error": kind, "message": message, **extra}, headers)


def accepted(address: str, reason: str, message: str) -> Answer:
    """202 for an ask that is durably accepted but whose reply cannot be given now."""
    return Answer(
        202, {"accepted": True, "outcome": "unknown", "reason": reason, "address": address, "message": message}
    )


def unknown(message: str) -> Answer:
    """504: the message may or may not have been accepted."""
    return error(504, "unknown", message, accepted=None)


def outcome(exc: BaseException, *, address: str, ask: bool) -> Answer:
    """The answer for ``exc`` raised by ``rt.tell`` (``ask`` False) or ``rt.ask`` on ``address``.

    Order matters: subclasses come before their bases.
    """
    text = str(exc)
    if isinstance(exc, HandlerError):
        return Answer(409, {"error": "handler", "type": exc.type_name, "message": exc.message, "address": address})
    if isinstance(exc, MessageValidationError):
        return error(422, "invalid", text)
    if isinstance(exc, UnknownActorTypeError | UnknownHandlerError):
        return error(404, "not_found", text)
    if isinstance(exc, ReplyUnavailableError):
        return accepted(address, "reply_unavailable", text)
    if isinstance(exc, NonDeterminismError):
        # Only a step resumed from its journal can diverge: the message is durable and
        # stays in the inbox until the actor is resumed.
        return accepted(address, "suspended", text)
    if isinstance(exc, ReplicationTimeout):
        # The commit is durable locally; only the replica's confirmation is missing.
        if not ask:
            return Answer(202, {"accepted": True, "address": address, "replicated": False, "message": text})
        return accepted(address, "replication_timeout", text)
    if isinstance(exc, CommitUnknownError | AskTimeoutError):
        return unknown(text)
    if isinstance(exc, BackpressureError):
        return error(503, "backpressure", text)
    if isinstance(exc, ActorSuspendedError):
        return error(503, "suspended", text)
    if isinstance(exc, RuntimeClosedError):
        return error(503, "closed", text)
    if isinstance(exc, JournalError | ReplicationError):
        # A definite failure (CommitUnknownError, above, is the only journal error that may
        # have committed): nothing was accepted.
        return error(503, "unavailable", text)
    # Anything else was not foreseen: whether the message was accepted is not known.
    return unknown(f"{type(exc).__qualname__}: {text}")
