"""Listings of large values: decode the start of a stored msgpack value, cutting long parts short.

A listing (``python -m runtime history``, ``GET /actors/{type}/{key}/journal``)
shows every entry's payload decoded. A value of up to :data:`WHOLE_MAX` bytes is
decoded whole, exactly as :meth:`storage.Entry.decoded` does. A larger one is
walked item by item through range reads of its stored pieces: strings and
binaries longer than :data:`TEXT_MAX` bytes keep their start, arrays and maps
longer than :data:`ITEMS_MAX` keep their first elements, and the walk reads at
most :data:`READ_MAX` bytes and skips at most :data:`SKIP_MAX` items in all.
What is left out is said in place (``"… [52,428,800 bytes]"``), so a 50 MB
value lists in a few kilobytes of memory.
"""

from __future__ import annotations

import struct
from typing import Any, Protocol

import msgspec

WHOLE_MAX = 64 * 1024
"""Values up to this size are decoded whole."""
TEXT_MAX = 1024
"""Bytes of a long string or binary a listing keeps."""
ITEMS_MAX = 100
"""Elements of a long array or map a listing keeps."""
READ_MAX = 256 * 1024
"""Bytes a preview reads at most."""
SKIP_MAX = 100_000
"""Items a preview walks past at most (the elements of long arrays and maps it leaves out)."""
WINDOW = 16 * 1024
"""Bytes read ahead at a time."""


class RangeReader(Protocol):
    """What a preview reads from: a size and ranges (``storage.StoredValue``)."""

    size: int

    def read(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes from ``offset``."""
        ...


def preview(value: RangeReader) -> tuple[Any, bool, int]:
    """``(data, truncated, bytes read)``: the value decoded, long parts cut short when it is large."""
    if value.size <= WHOLE_MAX:
        return msgspec.msgpack.decode(value.read(0, value.size)), False, value.size
    walker = _Walker(value)
    data = walker.item(0)
    return data, walker.truncated, walker.bytes_read


class _Stop(Exception):
    """The walk read or skipped all it may."""


_FLOAT = {0xCA: struct.Struct(">f"), 0xCB: struct.Struct(">d")}
_INT = {0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q", 0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q"}
_SIZED = {0xD9: 1, 0xDA: 2, 0xDB: 4, 0xC4: 1, 0xC5: 2, 0xC6: 4}  # str and bin: width of the length
_EXT = {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}  # fixext: data length
_EXT_SIZED = {0xC7: 1, 0xC8: 2, 0xC9: 4}
_CONTAINER = {0xDC: (2, False), 0xDD: (4, False), 0xDE: (2, True), 0xDF: (4, True)}
_WIDTH = {1: ">B", 2: ">H", 4: ">I"}
ELIDED = "…"


class _Walker:
    def __init__(self, value: RangeReader) -> None:
        self._value = value
        self._pos = 0
        self._buf = b""
        self._buf_at = 0
        self._read = 0
        self._skipped = 0
        self.bytes_read = 0
        self.truncated = False
        self.stopped = False

    # -- bytes ------------------------------------------------------------------------------

    def _take(self, n: int) -> bytes:
        at = self._pos - self._buf_at
        if at < 0 or at + n > len(self._buf):
            if self._read >= READ_MAX:
                raise _Stop
            self._buf = self._value.read(self._pos, max(n, WINDOW))
            self._buf_at = self._pos
            self._read += len(self._buf)
            self.bytes_read = self._read
            at = 0
            if len(self._buf) < n:
                raise _Stop  # the value ends early: not msgpack
        self._pos += n
        return self._buf[at : at + n]

    def _number(self, fmt: str) -> int:
        data = self._take(struct.calcsize(fmt))
        (value,) = struct.unpack(fmt, data)
        return int(value)

    # -- items ------------------------------------------------------------------------------

    def item(self, depth: int) -> Any:
        if self.stopped:
            return ELIDED
        start = self._pos
        try:
            return self._item(depth)
        except (_Stop, struct.error, msgspec.DecodeError):
            self.stopped = self.truncated = True
            self._pos = start
            return ELIDED

    def _item(self, depth: int) -> Any:
        begin = self._pos
        b = self._take(1)[0]
        if b <= 0x7F:
            return b
        if b >= 0xE0:
            return b - 0x100
        if b <= 0x8F:
            return self._map(b & 0x0F, depth)
        if b <= 0x9F:
            return self._array(b & 0x0F, depth)
        if b <= 0xBF:
            return self._text(b & 0x1F, True)
        if b in (0xC0, 0xC2, 0xC3):
            return None if b == 0xC0 else b == 0xC3
        if b in _FLOAT:
            (number,) = _FLOAT[b].unpack(self._take(_FLOAT[b].size))
            return number
        if b in _INT:
            return self._number(_INT[b])
        if b in _SIZED:
            return self._text(self._number(_WIDTH[_SIZED[b]]), b >= 0xD9)
        if b in _CONTAINER:
            width, is_map = _CONTAINER[b]
            count = self._number(_WIDTH[width])
            return self._map(count, depth) if is_map else self._array(count, depth)
        if b in _EXT or b in _EXT_SIZED:
            length = _EXT[b] if b in _EXT else self._number(_WIDTH[_EXT_SIZED[b]])
            if length > TEXT_MAX:
                raise _Stop
            self._pos += 1 + length  # the extension's type, then its data
            end, self._pos = self._pos, begin
            return msgspec.msgpack.decode(self._take(end - begin))
        raise _Stop  # 0xc1: not msgpack

    def _text(self, length: int, is_str: bool) -> Any:
        if length <= TEXT_MAX:
            data = self._take(length)
            return data.decode("utf-8", "replace") if is_str else data
        head = self._take(TEXT_MAX)
        self._pos += length - TEXT_MAX
        self.truncated = True
        if is_str:
            return head.decode("utf-8", "ignore") + f"{ELIDED} [{length:,} bytes]"
        return head + f"{ELIDED} [{length:,} bytes]".encode()

    def _array(self, count: int, depth: int) -> list[Any]:
        if depth > 64:
            raise _Stop
        out = []
        for _ in range(min(count, ITEMS_MAX)):
            out.append(self.item(depth + 1))
            if self.stopped:
                return out
        if count > ITEMS_MAX:
            self.truncated = True
            out.append(f"{ELIDED} [{count - ITEMS_MAX:,} more]")
            self._skip(count - ITEMS_MAX)
        return out

    def _map(self, count: int, depth: int) -> dict[Any, Any]:
        if depth > 64:
            raise _Stop
        out: dict[Any, Any] = {}
        for _ in range(min(count, ITEMS_MAX)):
            key = self.item(depth + 1)
            value = self.item(depth + 1)
            try:
                out[key] = value
            except TypeError:  # a key msgpack allows and a dict does not (an array)
                out[repr(key)] = value
            if self.stopped:
                return out
        if count > ITEMS_MAX:
            self.truncated = True
            out[ELIDED] = f"[{count - ITEMS_MAX:,} more]"
            self._skip(2 * (count - ITEMS_MAX))
        return out

    def _skip(self, items: int) -> None:
        """Walk past ``items`` items without decoding them (long strings are never read)."""
        while items > 0:
            items -= 1
            self._skipped += 1
            if self._skipped > SKIP_MAX:
                raise _Stop
            b = self._take(1)[0]
            if b <= 0x7F or b >= 0xE0 or b in (0xC0, 0xC2, 0xC3):
                continue
            if b <= 0x8F:
                items += 2 * (b & 0x0F)
            elif b <= 0x9F:
                items += b & 0x0F
            elif b <= 0xBF:
                self._pos += b & 0x1F
            elif b in _FLOAT:
                self._pos += _FLOAT[b].size
            elif b in _INT:
                self._pos += struct.calcsize(_INT[b])
            elif b in _SIZED:
                self._pos += self._number(_WIDTH[_SIZED[b]])
            elif b in _CONTAINER:
                width, is_map = _CONTAINER[b]
                count = self._number(_WIDTH[width])
                items += 2 * count if is_map else count
            elif b in _EXT:
                self._pos += 1 + _EXT[b]
            elif b in _EXT_SIZED:
                self._pos += 1 + self._number(_WIDTH[_EXT_SIZED[b]])
            else:
                raise _Stop
