"""Binary arrays for the PostgreSQL writer's columns, built with little Python per element.

psycopg dumps a list as a binary array one element at a time in Python (a
``struct.pack`` per element); for the writer's batches that was about 40 % of
its time, holding the GIL the event loop needs meanwhile. Here a column of
numbers becomes PostgreSQL's binary array format in a fixed number of C-level
operations: one ``array.array`` for the values, and strided slice copies that
interleave each 8-byte value with its 4-byte length. A value beyond 64 bits
raises ``OverflowError`` (the unit's own data, as psycopg's own error would be).
Text and bytes are joined with their lengths in one ``bytes.join``.
"""

from __future__ import annotations

import array
import struct
import sys
from typing import Any

from psycopg.abc import AdaptContext
from psycopg.adapt import Dumper
from psycopg.pq import Format

INT8, FLOAT8, TEXT, BYTEA = 20, 701, 25, 17
INT8_ARRAY, FLOAT8_ARRAY, TEXT_ARRAY, BYTEA_ARRAY = 1016, 1022, 1009, 1001
_LENGTH = struct.Struct(">i").pack
_NULL = _LENGTH(-1)


class Int8s(list[int]):
    """A column of ints bound as ``int8[]`` (no NULLs)."""


class Float8s(list[float]):
    """A column of floats bound as ``float8[]`` (no NULLs)."""


def _binary_array(values: array.array[Any], element_oid: int) -> bytes:
    n = len(values)
    if n == 0:
        return struct.pack(">iii", 0, 0, element_oid)
    if sys.byteorder == "little":
        values.byteswap()
    raw = values.tobytes()
    out = bytearray(12 * n)
    out[3::12] = b"\x08" * n  # each element's length: 8 bytes
    for k in range(8):
        out[4 + k :: 12] = raw[k::8]
    return struct.pack(">iiiii", 1, 0, element_oid, n, 1) + bytes(out)


class Int8sDumper(Dumper):
    """:class:`Int8s` as a binary ``int8[]``."""

    format = Format.BINARY
    oid = INT8_ARRAY

    def dump(self, obj: Any) -> bytes:
        """The binary array."""
        return _binary_array(array.array("q", obj), INT8)


class Float8sDumper(Dumper):
    """:class:`Float8s` as a binary ``float8[]``."""

    format = Format.BINARY
    oid = FLOAT8_ARRAY

    def dump(self, obj: Any) -> bytes:
        """The binary array."""
        return _binary_array(array.array("d", obj), FLOAT8)


class Texts(list[str | None]):
    """A column of text (NULLs allowed) bound as ``text[]``."""


class Blobs(list[bytes]):
    """A column of bytes bound as ``bytea[]`` (no NULLs)."""


def _binary_varlena(items: list[bytes | None], element_oid: int) -> bytes:
    n = len(items)
    if n == 0:
        return struct.pack(">iii", 0, 0, element_oid)
    nulls = None in items
    body = b"".join([_NULL if b is None else _LENGTH(len(b)) + b for b in items])
    return struct.pack(">iiiii", 1, int(nulls), element_oid, n, 1) + body


class TextsDumper(Dumper):
    """:class:`Texts` as a binary ``text[]`` (UTF-8; a lone surrogate raises ``UnicodeEncodeError``)."""

    format = Format.BINARY
    oid = TEXT_ARRAY

    def dump(self, obj: Any) -> bytes:
        """The binary array."""
        return _binary_varlena([None if s is None else s.encode() for s in obj], TEXT)


class BlobsDumper(Dumper):
    """:class:`Blobs` as a binary ``bytea[]``."""

    format = Format.BINARY
    oid = BYTEA_ARRAY

    def dump(self, obj: Any) -> bytes:
        """The binary array."""
        return _binary_varlena([bytes(b) for b in obj], BYTEA)


def register(context: AdaptContext) -> None:
    """Use these dumpers on ``context`` (the writer's connection)."""
    context.adapters.register_dumper(Int8s, Int8sDumper)
    context.adapters.register_dumper(Float8s, Float8sDumper)
    context.adapters.register_dumper(Texts, TextsDumper)
    context.adapters.register_dumper(Blobs, BlobsDumper)
