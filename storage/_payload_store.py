"""The ``payloads`` table of a SQLite journal: values stored as chunks, read back, checked, reclaimed.

See :mod:`storage._payloads` for how a value is cut and what a reference
holds. Here: the writer's side (:class:`PayloadWriter`, run in the writer
thread inside the transaction, and savepoint, of the rows that refer to the
chunks, so a unit that fails or a crash leaves no chunk behind), the readers'
side (:func:`resolve`, :class:`StoredValue`), ``check``'s side
(:func:`verify`) and reclaiming chunks nothing refers to (:func:`reclaim`).

**What may be reclaimed.** A chunk a journal entry or snapshot refers to is
marked ``kept`` when that row is written; only compaction deletes such rows.
So a chunk is in one of three states:

- ``kept = 1``: some journal entry or snapshot may name it; never deleted.
- ``kept = 0`` and not in ``payloads_dropped``: no journal entry or snapshot
  names it (it was written for an inbox message, a key's reply, a promise's
  value or a dead letter alone). :func:`reclaim` deletes it once none of
  those transient rows names it, reading those tables only.
- ``kept = 0`` and in ``payloads_dropped``: compaction
  (:class:`~storage.DropHistory`) deleted a row that named it and demoted it,
  in the same transaction as the delete (:func:`demote`). A remaining entry
  or snapshot may still name it (content is shared), so it is proven unused
  against the journal's references too, by a staged reclaim:
  ``Reclaim(begin=True)``, :func:`unreferenced` on a reader, then
  :func:`reclaim_dropped` in bounded commits. One that is still named is
  promoted back (``kept = 1``) or, named by transient rows alone, moves to the
  second state.
"""

from __future__ import annotations

import hashlib
import threading
import typing
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
"""The columns whose rows come and go: read again in the transaction that deletes chunks."""
HISTORY = (("journal", "data"), ("snapshots", "data"))
"""The columns compaction deletes from: read in one read transaction by :func:`unreferenced`."""
REFERRING = HISTORY + TRANSIENT
"""Every column that may hold a reference."""

DROPPED = (
    "actor = ? AND seq >= ? AND seq < ? AND seq < (SELECT floor FROM actors WHERE id = ?)",
    "actor = ? AND seq < ? AND seq < (SELECT floor FROM actors WHERE id = ?)",
)
"""The journal rows and the snapshots a :class:`~storage.DropHistory` deletes (see :func:`dropped_params`):
one definition for the delete and for the demotion of their chunks that precedes it."""


def dropped_params(op: c.DropHistory) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The parameters of :data:`DROPPED` for ``op``."""
    return (op.actor, op.from_seq, op.below_seq, op.actor), (op.actor, op.below_seq, op.actor)

_FIRST = itemgetter(slice(0, 1))
_local = threading.local()


def _decompressor() -> zstandard.ZstdDecompressor:
    # One per thread: a zstandard (de)compressor must not be used by two threads at once.
    made: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if made is None:
        made = _local.decompressor = zstandard.ZstdDecompressor()
    return made


def has_table(conn: apsw.Connection, name: str = "payloads") -> bool:
    """Whether the file has a payloads table (a read-only journal of an older version may not)."""
    row = conn.execute("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?", (name,)).fetchone()
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

    While a staged reclaim runs (from its ``Reclaim(begin=True)`` to its last
    ``Reclaim(chunks=...)``), every existing chunk that a journal entry or
    snapshot written meanwhile refers to is noted: the reader that looked for
    references (:func:`unreferenced`) could not see that row, so the chunk is
    not deleted.
    """

    def __init__(self, threshold: int | None) -> None:
        if threshold is not None and threshold < 64:
            raise ValueError(f"payload_threshold must be at least 64 bytes (or None), not {threshold!r}")
        self.threshold = threshold
        self._compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        self.ops: frozenset[type[c.Op]] = frozenset({c.RecordKey, c.PutPromise, c.Reclaim, c.DropHistory})
        """The operations :meth:`op` may change or act on (others need no look)."""
        self.noted: set[int] | None = None
        """Chunks named by a journal entry or snapshot written, or demoted by compaction, since the staged
        reclaim began (None: none runs): the reader that looked for references did not see those changes."""

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
        """A key's reply or a promise's value stored as a payload; a reclaim carried out; chunks demoted."""
        if isinstance(op, c.DropHistory):
            demoted = demote(conn, op)  # before the delete, which the op's own statements do next
            if self.noted is not None:
                self.noted |= demoted
            return op
        if isinstance(op, c.Reclaim):
            self._reclaim(conn, op)
            return op
        limit = self.threshold
        if limit is None:
            return op
        if isinstance(op, c.RecordKey) and op.reply is not None and len(op.reply) > limit:
            return msgspec.structs.replace(op, reply=self.store(conn, op.reply, keep=False))
        if isinstance(op, c.PutPromise) and len(op.value) > limit:
            return msgspec.structs.replace(op, value=self.store(conn, op.value, keep=False))
        return op

    def _reclaim(self, conn: apsw.Connection, op: c.Reclaim) -> None:
        if op.begin:
            # Everything committed before this unit is seen by the reader that looks
            # next; everything the writer does from here on is noted.
            self.noted = set()
        elif op.chunks is None:
            reclaim(conn)
        else:
            noted = self.noted
            if noted is not None:  # None: no begin in this process, so nothing is proven
                reclaim_dropped(conn, op.chunks, op.named, noted)
            if op.last:
                self.noted = None

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
            if keep:
                if not kept:
                    promote(conn, [int(ident)])
                if self.noted is not None:
                    self.noted.add(int(ident))
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


def references(conn: apsw.Connection, value: bytes) -> set[int]:
    """Every chunk id a reference names (a nested list of pieces, and the chunks it names)."""
    kind, _, _, body = decode_reference(value)
    segments = decode_segments(body)
    ids = {what for _, what in segments if isinstance(what, int)}
    if kind == NESTED:
        inner = join(segments, lambda ident, length: chunk(conn, ident, length))
        ids |= {what for _, what in decode_segments(inner) if isinstance(what, int)}
    return ids


def _live(conn: apsw.Connection, columns: Sequence[tuple[str, str]], among: set[int]) -> set[int] | None:
    """The chunks of ``among`` that a reference in ``columns`` names; None if a reference cannot be read."""
    live: set[int] = set()
    for table, column in columns:
        # Every reference, however long: a reference has no length bound (a value of many
        # megabytes made of short pieces has a long list of pieces even once nested), and
        # one passed over would lose its chunks while its row still names them.
        sql = f"SELECT {column} FROM {table} WHERE substr({column}, 1, 1) = x'c1'"
        for (value,) in conn.execute(sql):
            try:
                live |= references(conn, value) & among
            except BadReference:
                return None
    return live


def _ids(conn: apsw.Connection, sql: str, ids: Sequence[int]) -> set[int]:
    # A list of ids as one bound parameter: no statement text grows with it.
    return {int(row[0]) for row in conn.execute(sql, (msgspec.json.encode(list(ids)),))}


def _delete(conn: apsw.Connection, dead: Sequence[int]) -> int:
    if dead:
        conn.executemany("DELETE FROM payloads WHERE id = ?", [(ident,) for ident in dead])
        conn.executemany("DELETE FROM payloads_dropped WHERE id = ?", [(ident,) for ident in dead])
    return len(dead)


def promote(conn: apsw.Connection, ids: Sequence[int]) -> None:
    """Chunks a journal entry or snapshot names: ``kept`` again, no longer waiting for a proof."""
    conn.executemany("UPDATE payloads SET kept = 1 WHERE id = ?", [(ident,) for ident in ids])
    conn.executemany("DELETE FROM payloads_dropped WHERE id = ?", [(ident,) for ident in ids])


def demote(conn: apsw.Connection, op: c.DropHistory) -> set[int]:
    """Mark the chunks of the rows ``op`` deletes as dropped (``kept = 0``, listed); their ids.

    Run in the writer's transaction just before the delete, so both land or
    neither does. Demoting is always safe: a dropped chunk is deleted only once
    proven unused, so one still shared with a remaining row merely costs a
    reclaim a look. The chunks of a reference that cannot be read stay kept
    (never freed, never lost).
    """
    ids: set[int] = set()
    for (table, column), where, params in zip(HISTORY, DROPPED, dropped_params(op), strict=True):
        sql = f"SELECT {column} FROM {table} WHERE {where} AND substr({column}, 1, 1) = x'c1'"
        for (value,) in conn.execute(sql, params).fetchall():
            try:
                ids |= references(conn, typing.cast("bytes", value))
            except BadReference:
                continue
    if ids:
        ordered = [(ident,) for ident in sorted(ids)]
        conn.executemany("UPDATE payloads SET kept = 0 WHERE id = ?", ordered)
        conn.executemany("INSERT OR IGNORE INTO payloads_dropped(id) VALUES (?)", ordered)
    return ids


def reclaim(conn: apsw.Connection) -> int:
    """Delete the chunks no journal entry or snapshot ever named and no transient row names now; how many.

    One transaction of the writer, reading the transient tables only. Dropped
    chunks (see the module's docstring) wait for a staged reclaim. A reference
    that cannot be read keeps every candidate: a reclaim never deletes what it
    cannot prove unused.
    """
    loose = {
        int(row[0])
        for row in conn.execute(
            "SELECT id FROM payloads WHERE kept = 0 AND id NOT IN (SELECT id FROM payloads_dropped)"
        )
    }
    if not loose:
        return 0
    live = _live(conn, TRANSIENT, loose)
    return 0 if live is None else _delete(conn, sorted(loose - live))


def unreferenced(conn: apsw.Connection) -> tuple[list[int], list[int]]:
    """``(unnamed, named)``: the dropped chunks no journal entry or snapshot names, and those one does.

    The reader's side of a staged reclaim, in one read snapshot, run after its
    ``Reclaim(begin=True)`` has committed: what the writer does later, it
    notes. ``([], [])`` if a reference cannot be read (nothing is proven then).
    """
    if not has_table(conn, "payloads_dropped"):
        return [], []
    with conn:  # one read transaction: the dropped chunks and every reference to them
        dropped = {int(row[0]) for row in conn.execute("SELECT id FROM payloads_dropped")}
        if not dropped:
            return [], []
        live = _live(conn, HISTORY, dropped)
    if live is None:
        return [], []
    return sorted(dropped - live), sorted(live)


def reclaim_dropped(conn: apsw.Connection, unnamed: Sequence[int], named: Sequence[int], noted: set[int]) -> int:
    """Settle dropped chunks after :func:`unreferenced`; how many were deleted. Inside the writer's transaction.

    A chunk the writer ``noted`` since the reclaim began is left for the next
    one. Of the others still dropped: those in ``named`` are promoted back to
    ``kept`` (the entries that named them can only have been deleted by a
    compaction, which would have noted them); those in ``unnamed`` are deleted
    unless a transient row names them now, and then they are merely no longer
    dropped (no journal entry or snapshot names them).
    """
    sql = "SELECT id FROM payloads_dropped WHERE id IN (SELECT value FROM json_each(?))"
    still = _ids(conn, sql, [ident for ident in named if ident not in noted])
    if still:
        promote(conn, sorted(still))
    loose = _ids(conn, sql, [ident for ident in unnamed if ident not in noted])
    if not loose:
        return 0
    live = _live(conn, TRANSIENT, loose)
    if live is None:
        return 0
    conn.executemany("DELETE FROM payloads_dropped WHERE id = ?", [(ident,) for ident in sorted(live)])
    return _delete(conn, sorted(loose - live))


def stats(conn: apsw.Connection) -> c.PayloadStats:
    """How many chunks, their bytes as stored and as content, how many may be reclaimed, how many are dropped."""
    if not has_table(conn):
        return c.PayloadStats(0, 0, 0, 0)
    row = conn.execute(
        "SELECT count(*), coalesce(sum(length(data)), 0), coalesce(sum(size), 0), "
        "coalesce(sum(kept = 0), 0) FROM payloads"
    ).fetchone()
    assert row is not None
    chunks, stored, content, loose = (int(v) for v in row)
    dropped = 0
    if has_table(conn, "payloads_dropped"):  # a read-only journal of schema 7 or 8 has none
        (dropped,) = conn.execute("SELECT count(*) FROM payloads_dropped").fetchone() or (0,)
    return c.PayloadStats(chunks, stored, content, loose, int(dropped))


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
