"""What an HTTP client is told about its message: one table from outcome to status.

A status must never tell a client that a message was not accepted when it
was (the client would resend it and run it twice), nor that it was accepted
when it may not have been. Every outcome of ``POST /actors/{type}/{key}/{handler}``
is one row of this table; the ``error`` field of an error body is the error's
stable code (every code and its status: ``docs/failures.md``):

======  ==========================================================================================
status  meaning
======  ==========================================================================================
200     the handler ran and replied (the body is the reply)
202     ``accepted: true``: a tell durably in the inbox; or an ask durably accepted whose reply
        cannot be given now (``outcome: "unknown"``, ``reason``: ``reply_unavailable``,
        ``nondeterminism``, ``replication_timeout``, ``shutdown``). Do not resend it as new;
        resend under the same ``Idempotency-Key`` later to learn its reply
400     the request is malformed (``malformed``: not JSON, a bad parameter or header)
401     no valid bearer token (``unauthorized``)
404     no such actor type or handler (``not_found``)
409     the handler ran and raised (``handler``, a definite outcome: ``type`` and ``message``
        say what); or the ``Idempotency-Key`` was first used for another call (``key_reused``)
413     the body is too large (``too_large``)
415     the body is not declared ``application/json`` (``unsupported``)
421     the Host header names a host this server does not serve (``misdirected``)
422     the body does not match the handler's message type (``invalid``), or holds a value the
        journal cannot store (``unstorable``)
503     refused, retry later (``Retry-After``): ``backpressure``, ``suspended``, ``closed``,
        ``unavailable`` (the journal failing), ``replication``
504     may or may not have been accepted: ``unknown`` (a commit of unknown outcome, an ask cut
        short while it was being made durable), ``timeout`` (an ask that timed out): resend
        only under an ``Idempotency-Key``
======  ==========================================================================================

Every 4xx and 503: nothing was accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
from starlette.responses import Response

from actors import HandlerError, ReplicationTimeout, SteleError

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

    Every Stele error carries its status and stable code (the ``errors``
    package): this is the one place they become HTTP. A 202 is an accepted
    message without a reply now; a 409 handler error carries the handler's
    exception; anything not foreseen may or may not have been accepted (504).
    """
    text = str(exc)
    if isinstance(exc, HandlerError):
        return Answer(409, {"error": exc.code, "type": exc.type_name, "message": exc.message, "address": address})
    if not isinstance(exc, SteleError):
        return unknown(f"{type(exc).__qualname__}: {text}")
    if exc.status == 202:
        if isinstance(exc, ReplicationTimeout) and not ask:
            # The commit is durable locally; only the replica's confirmation is missing.
            return Answer(202, {"accepted": True, "address": address, "replicated": False, "message": text})
        return accepted(address, exc.code, text)
    if exc.status >= 500 and exc.status != 503:
        # 504 says it: may or may not have been accepted. Never 500, which would
        # leave an accepted message looking like a refused one.
        return error(504, exc.code, text, accepted=None)
    return error(exc.status, exc.code, text)
