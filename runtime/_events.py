"""Emitting an event, the one way: live in a step and on replay alike.

``self.emit(event)`` checks that the actor has an ``@apply`` method for the
event, encodes it as it will be journaled, and applies the *decoded* copy: the
very value a rebuild from the journal will apply, so live state and rebuilt
state cannot differ (G5, G6).
"""

from __future__ import annotations

from typing import Any

import msgspec

from actors import MessageValidationError, UnknownEventError
from actors._actor import ActorDescription

from ._registry import Registry
from ._values import storable

_encode = msgspec.msgpack.Encoder().encode


def emit(registry: Registry, desc: ActorDescription, instance: Any, event: msgspec.Struct) -> tuple[str, bytes]:
    """Apply ``event`` to ``instance``; return its type name and encoded payload, as journaled.

    Raises :class:`UnknownEventError` if no ``@apply`` method takes it,
    :class:`MessageValidationError` if it cannot be journaled, and whatever
    the applier raises.
    """
    applier = desc.appliers.get(type(event))
    if applier is None:
        raise UnknownEventError(f"{desc.cls.__qualname__} has no @apply method for {type(event).__qualname__}")
    name = registry.names[type(event)]
    try:
        data = _encode(event)
        decoded = registry.codec.decode(name, data)
    except Exception as exc:
        raise MessageValidationError(
            f"event {name} emitted by {instance.address} is invalid: {storable(str(exc))}"
        ) from None
    applier(instance, decoded)
    return name, data
