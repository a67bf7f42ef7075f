"""msgpack codec with a registry of named types.

Storage knows no actor classes: the runtime hands it a mapping from type names
to msgspec types, and storage turns bytes into those types (or into a clear
error naming the journal position and the type).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from ._errors import UndecodableEntry


class Codec:
    """One reusable ``Encoder`` and one typed ``Decoder`` per registered type name."""

    __slots__ = ("_decoders", "_encoder", "_types", "encode")

    def __init__(self, types: Mapping[str, Any] | None = None) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self.encode = self._encoder.encode
        self._types: dict[str, Any] = {}
        self._decoders: dict[str, msgspec.msgpack.Decoder[Any]] = {}
        for name, tp in (types or {}).items():
            self.register(name, tp)

    def register(self, name: str, tp: Any) -> None:
        """Register ``tp`` under ``name``; re-registering the same type is a no-op."""
        known = self._types.get(name)
        if known is not None and known is not tp:
            raise ValueError(f"two different types are registered as {name!r}: {known!r} and {tp!r}")
        self._types[name] = tp
        self._decoders[name] = msgspec.msgpack.Decoder(tp)

    def __contains__(self, name: str) -> bool:
        return name in self._decoders

    def decoder(self, name: str) -> msgspec.msgpack.Decoder[Any]:
        """The typed decoder of ``name`` (its ``DecodeError`` says what does not match the type)."""
        return self._decoders[name]

    def type_of(self, name: str) -> Any:
        """The type registered under ``name``."""
        return self._types[name]

    def decode(self, name: str, data: bytes, *, position: int = -1) -> Any:
        """Decode ``data`` as the type registered under ``name``."""
        decoder = self._decoders.get(name)
        if decoder is None:
            raise UndecodableEntry(
                f"journal entry at position {position} has type {name!r}, which no registered actor class declares",
                position=position,
                type_name=name,
            )
        try:
            return decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise UndecodableEntry(
                f"journal entry at position {position} cannot be decoded as {name!r}: {exc}",
                position=position,
                type_name=name,
            ) from None


def decode_untyped(data: bytes) -> Any:
    """Decode a payload without knowing its type (for inspection tools)."""
    return msgspec.msgpack.decode(data)
