"""The actor classes a runtime hosts, and the type registry built from them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

import storage
from actors import Actor, ActorDefinitionError, UnknownActorTypeError, UnknownHandlerError
from actors._actor import ActorDescription, HandlerInfo, describe

from ._values import text


def type_name(tp: type) -> str:
    """The name a type is journaled under."""
    return tp.__qualname__


class Registry:
    """Actor descriptions by type name, and a codec knowing every message, event and state."""

    def __init__(self, classes: Iterable[type[Actor]]) -> None:
        self.actors: dict[str, ActorDescription] = {}
        self.codec = storage.Codec()
        self.names: dict[type, str] = {}
        self._routes: dict[tuple[str, type], tuple[HandlerInfo, str, msgspec.msgpack.Decoder[Any]]] = {}
        for cls in classes:
            desc = describe(cls)
            known = self.actors.get(desc.type_name)
            if known is not None and known.cls is not cls:
                raise ActorDefinitionError(f"two actor classes are named {desc.type_name!r}: {known.cls!r} and {cls!r}")
            self.actors[desc.type_name] = desc
            types: list[type] = [desc.state_type]
            types += [h.message_type for h in desc.handlers.values()]
            types += list(desc.appliers)
            for tp in types:
                self._register(tp)

    def _register(self, tp: type) -> None:
        name = type_name(tp)
        try:
            self.codec.register(name, tp)
        except ValueError as exc:
            raise ActorDefinitionError(str(exc)) from None
        self.names[tp] = name

    def resolve(self, address: str) -> tuple[ActorDescription, str]:
        """Split ``"Type/key"`` and find the actor class, or raise a clear error."""
        text(address, "actor address")
        kind, sep, key = address.partition("/")
        if not sep or not kind or not key:
            raise UnknownActorTypeError(f"{address!r} is not an actor address; expected 'Type/key'")
        desc = self.actors.get(kind)
        if desc is None:
            known = ", ".join(sorted(self.actors)) or "none"
            raise UnknownActorTypeError(f"no actor type {kind!r} (in {address!r}); known types: {known}")
        return desc, key

    def route(self, desc: ActorDescription, msg: Any) -> tuple[HandlerInfo, str, msgspec.msgpack.Decoder[Any]]:
        """The handler of ``desc`` for ``msg``, its type's journaled name, and its typed decoder.

        Cached per (actor type, message type): every message takes this path.
        """
        key = (desc.type_name, type(msg))
        found = self._routes.get(key)
        if found is None:
            info = self.handler_for(desc, msg)
            name = self.names[info.message_type]
            found = self._routes[key] = (info, name, self.codec.decoder(name))
        return found

    def handler_for(self, desc: ActorDescription, msg: Any) -> HandlerInfo:
        """The handler of ``desc`` taking messages of ``type(msg)``."""
        info = desc.by_message.get(type(msg))
        if info is None:
            if not isinstance(msg, msgspec.Struct):
                raise UnknownHandlerError(f"messages must be msgspec.Struct instances, not {type(msg).__qualname__}")
            known = ", ".join(sorted(type_name(t) for t in desc.by_message)) or "none"
            raise UnknownHandlerError(
                f"{desc.type_name} has no handler for {type(msg).__qualname__}; it takes: {known}"
            )
        return info

    def handler_named(self, desc: ActorDescription, name: str) -> HandlerInfo:
        """The handler of ``desc`` called ``name``."""
        info = desc.handlers.get(name)
        if info is None:
            known = ", ".join(sorted(desc.handlers)) or "none"
            raise UnknownHandlerError(f"{desc.type_name} has no handler {name!r}; it has: {known}")
        return info
