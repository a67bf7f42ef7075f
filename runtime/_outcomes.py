"""What an effect's journal entry means, shared by a running step and a replay.

The name an effect is journaled and compared under, the type its result
decodes as, a timer's due time, and the journaled outcome of an actor's ask
and of a promise.
"""

from __future__ import annotations

import datetime
import functools
import typing
from collections.abc import Callable
from typing import Any

import msgspec

from actors import AskTimeoutError, HandlerError, PromiseError, UnstorableValueError

from ._records import EffectRecord, reply_decoder
from ._values import finite


def due_time(now: float, when: float | datetime.datetime) -> float:
    """When a timer scheduled at ``now`` for ``when`` (a delay or an aware datetime) is due."""
    if isinstance(when, datetime.datetime):
        if when.tzinfo is None:
            raise ValueError("schedule() wants an aware datetime (with a time zone)")
        due = when.timestamp()
    else:
        try:
            due = now + float(when)
        except (TypeError, ValueError, OverflowError) as exc:
            raise UnstorableValueError(f"schedule() wants seconds or a datetime, not {when!r}: {exc}") from None
    finite(due, "a timer's due time")
    if due < now:
        raise ValueError(f"cannot schedule in the past ({now - due:.3f} s ago)")
    return due


def answered(record: EffectRecord, address: str, reply_type: Any) -> Any:
    """An actor's ask, as journaled: the reply, the other handler's error, or the timeout."""
    if not record.ok:
        raise AskTimeoutError(record.error)
    reply = reply_decoder.decode(record.result)
    if not reply.ok:
        raise HandlerError(address, reply.error_type, reply.error)
    return msgspec.msgpack.decode(reply.value, type=reply_type)


def promised(record: EffectRecord) -> Any:
    """A promise's journaled outcome: its value, or the PromiseError of its timeout."""
    if not record.ok:
        raise PromiseError(record.error)
    return msgspec.msgpack.decode(record.result)


def effect_name(fn: Callable[..., Any]) -> str:
    """The name an effect is journaled and compared under.

    The qualified name without the module: the same function must keep its name
    whether its module runs as ``__main__``, is imported, or is loaded by a
    replay tool, or every replay would diverge.
    """
    while isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, "__qualname__", None) or type(fn).__qualname__


@functools.lru_cache(maxsize=4096)
def _hints(fn: Callable[..., Any]) -> Any:
    try:
        return typing.get_type_hints(fn).get("return", Any)
    except Exception:  # unresolvable annotations: decode untyped
        return Any


def return_type(fn: Callable[..., Any]) -> Any:
    """The type an effect's journaled result decodes as: ``fn``'s return annotation."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    try:
        return _hints(fn)
    except TypeError:  # unhashable callable
        return Any
