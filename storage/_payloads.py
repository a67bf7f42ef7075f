"""Payloads stored once: how a large value is cut into chunks, and the reference that replaces it.

A value above the threshold is not stored where it belongs (a journal entry, a
snapshot, an inbox message, a key's reply, a promise's value). It is cut into
chunks, each stored once in the ``payloads`` table under the SHA-256 of its
content and compressed with zstd, and the row holds a *reference* instead: a
short manifest that lists, in order, the pieces the value is made of (bytes
kept inline, or a chunk by its id and length). Reading concatenates them.

Where the cuts fall decides what is shared, so they are made from the content
(the same bytes cut the same way wherever they appear):

- **Structure first.** Every value the journal stores is msgpack. A walk over
  its items (without decoding them) cuts exactly around every string or binary
  of at least :data:`STRING_MIN` bytes. A model's answer is then the same chunk
  in the effect that returned it, the event that recorded it, the reply that
  carried it and every later snapshot of the state that holds it: stored once.
- **Content-defined chunks for the rest.** What lies between those strings (the
  glue: keys, numbers, short strings), and strings longer than
  :data:`CHUNK_MAX`, are cut by FastCDC, whose cut points depend only on the
  bytes around them: a state that grows by appending shares every chunk but
  the ones around the change with the snapshot before it.

A manifest that grows long (a huge value, or a state with thousands of
strings) is itself stored the same way, and the row holds the reference to
that; so a snapshot of a growing conversation costs the new turns and a few
chunks of manifest, not the whole conversation again.

Every reference carries the CRC-32 of the whole value and of itself; every
chunk the CRC-32 of its stored bytes and the SHA-256 of its content. A
reference starts with the byte ``0xc1``, which msgpack never uses: nothing
stored inline can be taken for one.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from zlib import crc32

import pyfastcdc

MARK = 0xC1
"""The first byte of every reference (msgpack leaves 0xc1 unused: no value starts with it)."""
MARK_BYTES = bytes([MARK])

DIRECT = 1
"""A reference whose pieces make the value."""
NESTED = 2
"""A reference whose pieces make the list of pieces of the value (a manifest stored as a payload)."""

DEFAULT_THRESHOLD = 1024
"""Values longer than this many bytes are stored as payloads by default."""
STRING_MIN = 512
"""Strings and binaries at least this long inside a large value become chunks of their own."""
INLINE_MAX = 256
"""Pieces shorter than this stay inline in the reference (a chunk row would cost more)."""
CHUNK_MAX = 32 * 1024
"""The longest chunk: longer strings and glue are cut by content-defined chunking."""
MANIFEST_MAX = 2048
"""A list of pieces longer than this is itself stored as a payload (a nested reference)."""
STRUCTURE_BUDGET = 1 << 18
"""msgpack items the structural walk visits at most; past that, the rest is content-defined chunks."""

_CDC = pyfastcdc.FastCDC(8192, min_size=2048, max_size=CHUNK_MAX)
_CDC_MANIFEST = pyfastcdc.FastCDC(1024, min_size=256, max_size=8192)

Piece = tuple[int, int, bool]
"""``(start, end, chunk)``: a slice of the value, stored as a chunk or kept inline."""


class BadReference(Exception):
    """A reference or chunk that cannot be read back (corrupt, or a chunk missing)."""


def is_reference(value: bytes) -> bool:
    """Whether ``value`` (as stored) is a reference to a payload."""
    return value[:1] == MARK_BYTES


# -- cutting --------------------------------------------------------------------------------

# For each first byte of a msgpack item: the item's whole size when fixed (scalars), the size of
# its header when its elements follow it (maps and arrays), 0 when its length is in the item
# (strings, binaries, extensions), -1 for 0xc1 (never used: not msgpack).
_SIZE = [1] * 256
for _b in range(0xA0, 0xC0):
    _SIZE[_b] = 0  # fixstr
for _b, _n in {
    0xC1: -1, 0xC4: 0, 0xC5: 0, 0xC6: 0, 0xC7: 0, 0xC8: 0, 0xC9: 0, 0xCA: 5, 0xCB: 9,
    0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9, 0xD0: 2, 0xD1: 3, 0xD2: 5, 0xD3: 9,
    0xD4: 3, 0xD5: 4, 0xD6: 6, 0xD7: 10, 0xD8: 18, 0xD9: 0, 0xDA: 0, 0xDB: 0,
    0xDC: 3, 0xDD: 5, 0xDE: 3, 0xDF: 5,
}.items():  # fmt: skip
    _SIZE[_b] = _n
# (length field size, extra bytes before the payload) of items with a length: str, bin, ext.
_LENGTH = {0xD9: (1, 0), 0xDA: (2, 0), 0xDB: (4, 0), 0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0),
           0xC7: (1, 1), 0xC8: (2, 1), 0xC9: (4, 1)}  # fmt: skip
_UNPACK = {1: struct.Struct(">B").unpack_from, 2: struct.Struct(">H").unpack_from, 4: struct.Struct(">I").unpack_from}


def strings(
    data: bytes | memoryview, minimum: int = STRING_MIN, budget: int = STRUCTURE_BUDGET
) -> list[tuple[int, int]]:
    """``(start, end)`` of the payload of every msgpack string or binary of at least ``minimum`` bytes.

    A linear walk over the item headers (containers' elements follow their
    header, so no stack is needed). It stops at anything that is not msgpack,
    or after ``budget`` items: cut points are only a matter of sharing, never
    of correctness.
    """
    cuts: list[tuple[int, int]] = []
    size = _SIZE
    n = len(data)
    p = 0
    while p < n and budget > 0:
        budget -= 1
        b = data[p]
        step = size[b]
        if step > 0:
            p += step
            continue
        if step < 0:
            break
        if b < 0xC0:  # fixstr: at most 31 bytes
            p += 1 + (b & 0x1F)
            continue
        width, extra = _LENGTH[b]
        if p + 1 + width > n:
            break
        (length,) = _UNPACK[width](data, p + 1)
        start = p + 1 + width + extra
        end = start + length
        if end > n:
            break
        if length >= minimum and not extra:
            cuts.append((start, end))
        p = end
    return cuts


def plan(data: bytes | memoryview) -> list[Piece]:
    """How ``data`` is cut: its pieces in order, each a chunk or inline."""
    pieces: list[Piece] = []
    at = 0
    for start, end in [*strings(data), (len(data), len(data))]:
        _run(pieces, data, at, start, _CDC, string=False)
        _run(pieces, data, start, end, _CDC, string=True)
        at = end
    return pieces


def plan_manifest(body: bytes) -> list[Piece]:
    """How a long list of pieces is cut (small content-defined chunks: it changes at its ends)."""
    pieces: list[Piece] = []
    _run(pieces, body, 0, len(body), _CDC_MANIFEST, string=False)
    return pieces


def _run(
    pieces: list[Piece], data: bytes | memoryview, lo: int, hi: int, cdc: pyfastcdc.FastCDC, *, string: bool
) -> None:
    length = hi - lo
    if length <= 0:
        return
    if length < INLINE_MAX:
        pieces.append((lo, hi, False))
    elif string and length <= CHUNK_MAX:
        pieces.append((lo, hi, True))
    else:
        for chunk in cdc.cut_buf(memoryview(data)[lo:hi]):
            start = lo + chunk.offset
            pieces.append((start, start + chunk.length, chunk.length >= INLINE_MAX))


# -- references -------------------------------------------------------------------------------


def _varint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _read_varint(data: bytes, p: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if p >= len(data):
            raise BadReference("a reference ends in the middle of a number")
        b = data[p]
        p += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, p
        shift += 7
        if shift > 63:
            raise BadReference("a reference holds a number too large")


Segment = tuple[int, bytes | int]
"""``(length, inline bytes or chunk id)`` of one piece of a value."""


def encode_segments(segments: list[Segment]) -> bytes:
    """The list of pieces, as a reference or a nested manifest holds it."""
    out = bytearray()
    for length, what in segments:
        if isinstance(what, int):
            _varint(out, length << 1 | 1)
            _varint(out, what)
        else:
            _varint(out, length << 1)
            out += what
    return bytes(out)


def decode_segments(body: bytes) -> list[Segment]:
    """The pieces a list of pieces names, in order."""
    segments: list[Segment] = []
    p = 0
    while p < len(body):
        head, p = _read_varint(body, p)
        length = head >> 1
        if head & 1:
            ident, p = _read_varint(body, p)
            segments.append((length, ident))
        else:
            if p + length > len(body):
                raise BadReference("a reference's inline piece runs past its end")
            segments.append((length, body[p : p + length]))
            p += length
    return segments


_CRC = struct.Struct("<I")


def encode_reference(kind: int, size: int, value_crc: int, body: bytes) -> bytes:
    """A reference: the mark, its kind, the value's size and CRC-32, its pieces, its own CRC-32."""
    out = bytearray((MARK, kind))
    _varint(out, size)
    out += _CRC.pack(value_crc & 0xFFFFFFFF)
    out += body
    out += _CRC.pack(crc32(out))
    return bytes(out)


def decode_reference(ref: bytes) -> tuple[int, int, int, bytes]:
    """``(kind, size, value_crc, body)`` of a reference, its own checksum checked."""
    if len(ref) < 8 or ref[0] != MARK:
        raise BadReference("not a reference")
    (stored,) = _CRC.unpack_from(ref, len(ref) - 4)
    if crc32(memoryview(ref)[:-4]) != stored:
        raise BadReference("the reference does not match its checksum")
    kind = ref[1]
    if kind not in (DIRECT, NESTED):
        raise BadReference(f"unknown reference kind {kind}")
    size, p = _read_varint(ref, 2)
    (value_crc,) = _CRC.unpack_from(ref, p)
    return kind, size, value_crc, ref[p + 4 : -4]


def offsets(segments: list[Segment]) -> Iterator[tuple[int, int, bytes | int]]:
    """``(offset, length, inline bytes or chunk id)`` of each piece."""
    at = 0
    for length, what in segments:
        yield at, length, what
        at += length


Fetch = Callable[[int, int], bytes]
"""``fetch(chunk_id, length)``: a chunk's content, checked (raises :class:`BadReference`)."""


def join(segments: list[Segment], fetch: Fetch) -> bytes:
    """The bytes the pieces make."""
    parts: list[bytes] = []
    for length, what in segments:
        parts.append(fetch(what, length) if isinstance(what, int) else what)
    return b"".join(parts)
