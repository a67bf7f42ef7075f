"""The ``payloads`` table of a SQLite journal: values stored as chunks, read back, checked, reclaimed.

See :mod:`storage._payloads` for how a value is cut and what a reference
holds. Here: the writer's side (:class:`PayloadWriter`, run in the writer
thread inside the transaction, and savepoint, of the rows that refer to the
chunks, so a unit that fails or a crash leaves no chunk behind), the readers'
side (:func:`resolve`, :class:`StoredValue`), ``check``'s side
(:func:`verify`) and reclaiming chunks nothing refers to (:func:`reclaim`).

**What is never reclaimed.** Journal entries and snapshots are never deleted,
so a chunk one of them refers to is marked ``kept`` when that row is written
and stays for as long as the journal does. Only chunks that were written for
the transient tables alone (an inbox message, a key's reply, a promise's
value, a dead letter) can lose their last reference; those are the only
candidates, and a reclaim looks for references to them in those tables only.
"""

from __future__ import annotations

import hashlib
import threading
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, TypeVar
from zlib import crc32

import apsw
import msgspec
import zstandard

from . import _contract as c
from ._payloads import (
    DIRECT,
    MANIFEST_MAX,
    MARK_BYTES,
    NESTED,
    BadReference,
    Fetch,
    Piece,
    Segment,
    decode_reference,
    decode_segments,
    encode_reference,
    encode_segments,
    is_reference,
    join,
    offsets,
    plan,
    plan_manifest,
)

R = TypeVar("R", bound=tuple[Any, ...])

ZSTD_LEVEL = 3
"""zstd's default level: about 300 MB/s per core here, and most of the ratio of higher levels on text."""

TRANSIENT = (("inbox", "payload"), ("idempotency", "reply"), ("promises", "value"), ("dead_letters", "payload"))
"""The columns whose rows are deleted, so whose chunks may be reclaimed."""

_FIRST = itemgetter(slice(0, 1))
_local = threading.local()


def _decompressor() -> zstandard.ZstdDecompressor:
    # One per thread: a zstandard (de)compressor must not be used by two threads at once.
    made: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if made is None:
        made = _local.decompressor = zstandard.ZstdDecompressor()
    return made


def has_table(conn: apsw.Connection) -> bool:
    """Whether the file has a payloads table (a read-only journal of an older version may not)."""
    row = conn.execute("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'payloads'").fetchone()
    return row is not None


# -- reading -----------------------------------------------------------------------------------


def chunk(conn: apsw.Connection, ident: int, length: int) -> bytes:
    """Chunk ``ident``'s content, its checksum and length checked (:class:`BadReference` if not)."""
    row = conn.execute("SELECT zstd, crc, size, data FROM payloads WHERE id = ?", (ident,)).fetchone()
    if row is None:
        raise BadReference(f"payload chunk {ident} is missing")
    zstd, crc, size, data = row
    if crc32(data) != crc:
        raise BadReference(f"payload chunk {ident} does not match its checksum")
    try:
        content = _decompressor().decompress(data, max_output_size=size) if zstd else bytes(data)
    except zstandard.ZstdError as exc:
        raise BadReference(f"payload chunk {ident} cannot be decompressed: {exc}") from None
    if len(content) != size or size != length:
        raise BadReference(f"payload chunk {ident} holds {len(content)} bytes, its reference says {length}")
    return content


def segments_of(ref: bytes, fetch: Fetch) -> tuple[int, int, list[Segment]]:
    """``(size, crc, pieces)`` of the value ``ref`` refers to (a nested list of pieces read first)."""
    kind, size, value_crc, body = decode_reference(ref)
    if kind == NESTED:
        body = join(decode_segments(body), fetch)
    segments = decode_segments(body)
    if sum(length for length, _ in segments) != size:
        raise BadReference(f"the pieces of a reference do not add up to its size ({size} bytes)")
    return size, value_crc, segments


def resolve(conn: apsw.Connection, value: bytes) -> bytes:
    """``value`` as stored (inline, or a reference) -> the value, checked against its CRC-32."""
    if value[:1] != MARK_BYTES:
        return value
    cache: dict[int, bytes] = {}

    def fetch(ident: int, length: int) -> bytes:
        got = cache.get(ident)
        if got is None:
            got = cache[ident] = chunk(conn, ident, length)
        return got

    size, value_crc, segments = segments_of(value, fetch)
    data = join(segments, fetch)
    if len(data) != size or crc32(data) != value_crc:
        raise BadReference("a stored payload does not match the checksum its reference holds")
    return data


def resolve_rows(conn: apsw.Connection, rows: list[R], columns: Sequence[int]) -> list[R]:
    """``rows`` with every reference in ``columns`` replaced by its value."""
    out = []
    for row in rows:
        if any(isinstance(row[i], bytes) and is_reference(row[i]) for i in columns):
            fields = list(row)
            for i in columns:
                if isinstance(fields[i], bytes):
                    fields[i] = resolve(conn, fields[i])
            out.append(type(row)(fields))
        else:
            out.append(row)
    return out


def any_reference(values: Iterator[Any] | list[Any]) -> bool:
    """Whether any of ``values`` (bytes, or None) is a reference."""
    return any(isinstance(v, bytes) and v[:1] == MARK_BYTES for v in values)


class StoredValue:
    """One stored value, read piece by piece: its size, a range, or its pieces in order.

    Nothing is read until asked for, and at most one chunk is held at a time, so
    a listing can look at the start of a 50 MB value and a server can stream it
    whole with bounded memory.
    """

    def __init__(self, value: bytes, fetch: Fetch) -> None:
        self.reference = is_reference(value)
        self._fetch = fetch
        self._held: tuple[int, bytes] | None = None
        self.crc: int | None
        if self.reference:
            self.size, self.crc, segments = segments_of(value, fetch)
        else:
            self.size, self.crc, segments = len(value), crc32(value), [(len(value), value)]
        self._pieces = list(offsets(segments))
        self._starts = [start for start, _, _ in self._pieces]

    @classmethod
    def ranges(cls, size: int, crc: int | None, fetch: Fetch, step: int = 1 << 20) -> StoredValue:
        """A value stored whole in one row elsewhere (PostgreSQL), read ``step`` bytes at a time.

        ``fetch(index, length)`` returns bytes ``index * step`` to ``index * step
        + length`` of it; ``crc`` (its row's CRC-32, when it has one) is checked
        once :meth:`pieces` has read the whole value.
        """
        self = cls.__new__(cls)
        self.reference = False
        self._fetch = fetch
        self._held = None
        self.size, self.crc = size, crc
        self._pieces = [(at, min(step, size - at), at // step) for at in range(0, size, step)]
        self._starts = [start for start, _, _ in self._pieces]
        return self

    def _piece(self, index: int) -> bytes:
        _, length, what = self._pieces[index]
        if not isinstance(what, int):
            return what
        if self._held is not None and self._held[0] == what:
            return self._held[1]
        content = self._fetch(what, length)
        self._held = (what, content)
        return content

    def read(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes from ``offset`` (fewer at the end)."""
        if offset >= self.size or n <= 0:
            return b""
        out = bytearray()
        index = bisect_right(self._starts, offset) - 1
        while len(out) < n and index < len(self._pieces):
            start, _, _ = self._pieces[index]
            lo = offset + len(out) - start
            out += self._piece(index)[lo : lo + n - len(out)]
            index += 1
        return bytes(out)

    def pieces(self) -> Iterator[bytes]:
        """The value's bytes, piece by piece, in order (checked against its CRC-32 at the end)."""
        crc = 0
        for index in range(len(self._pieces)):
            piece = self._piece(index)
            crc = crc32(piece, crc)
            yield piece
        if self.crc is not None and crc != self.crc:
            raise BadReference("a stored payload does not match the checksum its reference holds")


# -- writing (the writer thread, inside its transaction) ---------------------------------------------

_DATA = {"journal": itemgetter(5), "snapshots": itemgetter(3), "inbox": itemgetter(4)}


class PayloadWriter:
    """Stores the large values of the rows the writer is about to insert; the small ones pass untouched.

    ``threshold`` None: nothing new is stored as a payload (references already
    in the journal are still read, and reclaimed).
    """

    def __init__(self, threshold: int | None) -> None:
        if threshold is not None and threshold < 64:
            raise ValueError(f"payload_threshold must be at least 64 bytes (or None), not {threshold!r}")
        self.threshold = threshold
        self._compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        self.ops: frozenset[type[c.Op]] = frozenset({c.RecordKey, c.PutPromise, c.Reclaim})
        """The operations :meth:`op` may change (others need no look)."""

    def journal(self, conn: apsw.Connection, rows: list[c.EntryRow]) -> list[c.EntryRow]:
        """Journal rows, a large value replaced by its reference (the row's crc stays the value's)."""
        limit = self.threshold
        if limit is None or max(map(len, map(_DATA["journal"], rows))) <= limit:
            return rows
        return [
            row if len(row[5]) <= limit else row._replace(data=self.store(conn, row[5], keep=True, crc=row[7]))
            for row in rows
        ]

    def snapshots(self, conn: apsw.Connection, rows: list[c.SnapshotRow]) -> list[c.SnapshotRow]:
        """Snapshot rows, likewise."""
        limit = self.threshold
        if limit is None or max(map(len, map(_DATA["snapshots"], rows))) <= limit:
            return rows
        return [
            row if len(row[3]) <= limit else row._replace(data=self.store(conn, row[3], keep=True, crc=row[5]))
            for row in rows
        ]

    def inbox(self, conn: apsw.Connection, rows: list[c.InboxRow]) -> list[c.InboxRow]:
        """Inbox rows, likewise (their chunks may be reclaimed once the message is processed)."""
        limit = self.threshold
        if limit is None or max(map(len, map(_DATA["inbox"], rows))) <= limit:
            return rows
        return [
            row if len(row[4]) <= limit else row._replace(payload=self.store(conn, row[4], keep=False)) for row in rows
        ]

    def op(self, conn: apsw.Connection, op: c.Op) -> c.Op:
        """A key's reply or a promise's value stored as a payload; a reclaim carried out."""
        if isinstance(op, c.Reclaim):
            reclaim(conn)
            return op
        limit = self.threshold
        if limit is None:
            return op
        if isinstance(op, c.RecordKey) and op.reply is not None and len(op.reply) > limit:
            return msgspec.structs.replace(op, reply=self.store(conn, op.reply, keep=False))
        if isinstance(op, c.PutPromise) and len(op.value) > limit:
            return msgspec.structs.replace(op, value=self.store(conn, op.value, keep=False))
        return op

    def store(self, conn: apsw.Connection, data: bytes, *, keep: bool, crc: int | None = None) -> bytes:
        """Store ``data`` as chunks; its reference. ``keep``: a journal entry or snapshot refers to it."""
        view = memoryview(data)
        body = encode_segments(self._segments(conn, view, plan(view), keep))
        kind = DIRECT
        if len(body) > MANIFEST_MAX:
            body = encode_segments(self._segments(conn, memoryview(body), plan_manifest(body), keep))
            kind = NESTED
        return encode_reference(kind, len(data), crc if crc is not None else crc32(data), body)

    def _segments(self, conn: apsw.Connection, view: memoryview, pieces: list[Piece], keep: bool) -> list[Segment]:
        out: list[Segment] = []
        for start, end, is_chunk in pieces:
            piece = view[start:end]
            out.append((end - start, self._chunk(conn, piece, keep) if is_chunk else bytes(piece)))
        return out

    def _chunk(self, conn: apsw.Connection, piece: memoryview, keep: bool) -> int:
        digest = hashlib.sha256(piece).digest()
        row = conn.execute("SELECT id, kept FROM payloads WHERE hash = ?", (digest,)).fetchone()
        if row is not None:
            ident, kept = row
            if keep and not kept:
                conn.execute("UPDATE payloads SET kept = 1 WHERE id = ?", (ident,))
            return int(ident)
        packed = self._compressor.compress(piece)
        zstd = len(packed) < len(piece)
        data = packed if zstd else bytes(piece)
        conn.execute(
            "INSERT INTO payloads(hash, size, zstd, kept, crc, data) VALUES (?, ?, ?, ?, ?, ?)",
            (digest, len(piece), int(zstd), int(keep), crc32(data), data),
        )
        return int(conn.last_insert_rowid())


# -- reclaiming, counting, checking ---------------------------------------------------------------


def _references(conn: apsw.Connection, value: bytes) -> set[int]:
    """Every chunk id a reference names (a nested list of pieces, and the chunks it names)."""
    kind, _, _, body = decode_reference(value)
    segments = decode_segments(body)
    ids = {what for _, what in segments if isinstance(what, int)}
    if kind == NESTED:
        inner = join(segments, lambda ident, length: chunk(conn, ident, length))
        ids |= {what for _, what in decode_segments(inner) if isinstance(what, int)}
    return ids


def reclaim(conn: apsw.Connection) -> int:
    """Delete the chunks nothing refers to any more; how many. Run inside the writer's transaction.

    Only chunks not ``kept`` are candidates (see the module's docstring). A
    reference that cannot be read keeps every candidate: a reclaim never
    deletes what it cannot prove unused.
    """
    loose = [int(row[0]) for row in conn.execute("SELECT id FROM payloads WHERE kept = 0")]
    if not loose:
        return 0
    live: set[int] = set()
    for table, column in TRANSIENT:
        # Every reference, however long: a reference has no length bound (a value of many
        # megabytes made of short pieces has a long list of pieces even once nested), and
        # one passed over would lose its chunks while its row still names them.
        sql = f"SELECT {column} FROM {table} WHERE substr({column}, 1, 1) = x'c1'"
        for (value,) in conn.execute(sql):
            try:
                live |= _references(conn, value)
            except BadReference:
                return 0
    dead = [(ident,) for ident in loose if ident not in live]
    if dead:
        conn.executemany("DELETE FROM payloads WHERE id = ?", dead)
    return len(dead)


def stats(conn: apsw.Connection) -> c.PayloadStats:
    """How many chunks, their bytes as stored and as content, and how many may be reclaimed."""
    if not has_table(conn):
        return c.PayloadStats(0, 0, 0, 0)
    row = conn.execute(
        "SELECT count(*), coalesce(sum(length(data)), 0), coalesce(sum(size), 0), "
        "coalesce(sum(kept = 0), 0) FROM payloads"
    ).fetchone()
    assert row is not None
    return c.PayloadStats(*(int(v) for v in row))


@dataclass(frozen=True)
class ChunkProblem:
    """A stored chunk that is not what its row says."""

    ident: int
    problem: str


def verify(conn: apsw.Connection) -> Iterator[ChunkProblem]:
    """Every chunk read back: its CRC-32, its decompression, its length and its SHA-256."""
    if not has_table(conn):
        return
    for ident, digest, size in conn.execute("SELECT id, hash, size FROM payloads ORDER BY id"):
        try:
            content = chunk(conn, ident, size)
        except BadReference as exc:
            yield ChunkProblem(ident, str(exc))
            continue
        if hashlib.sha256(content).digest() != digest:
            yield ChunkProblem(ident, f"payload chunk {ident} does not match its SHA-256")
