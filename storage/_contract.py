"""The storage contract: everything the runtime asks of a journal backend.

The runtime never spells a table name or a SQL statement: it hands a backend
*units* of typed rows and named operations, which commit whole or not at all,
and asks it questions through :class:`Reads`. A backend (the SQLite store, and
any other) implements :class:`Backend`; ``tests/storage/`` is the conformance
suite every backend must pass.

Rows are ``NamedTuple``s: named and typed for the reader, and still plain
tuples for a driver's ``executemany``, which binds them as they are.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, NamedTuple, Protocol
from zlib import crc32

import msgspec

from errors import SteleError

from ._codec import decode_untyped


class EntryKind(enum.StrEnum):
    """The closed set of journal entry kinds (a StrEnum: each compares equal to its name)."""

    MESSAGE = "message"
    """The message a step processes, with its journaled seed and time (opens the step)."""
    EFFECT = "effect"
    """An effect's outcome (also an actor's ask and a promise, by their ``ask:``/``promise:`` type)."""
    ATTEMPT = "attempt"
    """A failed attempt of a retried effect, with the time of the next one."""
    EVENT = "event"
    """An event, applied to the actor's state."""
    SEND = "send"
    """A message sent to another actor, committed with the step."""
    REQUEST = "request"
    """An actor's ask to another actor, committed before the step waits for the reply."""
    TIMER = "timer"
    """A message scheduled for later, committed with the step."""
    CANCEL = "cancel"
    """A pending timer cancelled by the step."""
    REPLY = "reply"
    """How the step ended: it closes the step."""
    START = "start"
    """An attempt of a streamed effect begins (an attempt after the first starts the stream over)."""
    CHUNK = "chunk"
    """One chunk of a streamed effect, journaled as it arrived."""
    FORK = "fork"
    """Where a fork came from (its first entry, with a snapshot of the state it began with)."""


STREAMED = "stream:"
"""The ``type`` of a streamed effect's ``effect`` and ``attempt`` entries begins with this.

An actor's *stream* is its ``start`` and ``chunk`` entries and those ``effect``
and ``attempt`` entries, in sequence order (:meth:`Reads.stream_entries`).
"""


class ActorStatus(enum.StrEnum):
    """Whether an actor runs its messages, or is suspended (after non-determinism) until resumed."""

    ACTIVE = "active"
    SUSPENDED = "suspended"


class ActorCondition(enum.StrEnum):
    """What an actor is doing, as its journal tells it (what the console shows and filters by)."""

    SUSPENDED = "suspended"
    """Suspended after non-determinism, until resumed."""
    WAITING = "waiting"
    """A step is open and resumable: it waits on an effect, a promise or another actor's reply."""
    ACTIVE = "active"
    """Messages wait in its inbox."""
    IDLE = "idle"
    """Nothing to do (durable timers may be pending)."""


ACTOR_FILTERS = (*(c.value for c in ActorCondition), "dead_letters")
"""What :meth:`Reads.actor_page` filters by: a condition, or having dead letters."""


Sync = Literal["fsync", "normal"]
"""How a backend makes a commit durable: ``fsync`` (survives a power cut) or ``normal``."""


# -- rows ------------------------------------------------------------------------------------


class InboxRow(NamedTuple):
    """A message accepted and not yet processed (``id`` is its message id)."""

    id: int
    target: str
    handler: str
    type: str
    payload: bytes
    due: float | None
    key: str | None
    """A client's idempotency key (never an internal marker)."""
    attempts: int
    sender: str | None
    at: float
    timer_id: str | None
    """A durable timer's id (timers only)."""
    reply_to: str | None
    """An actor's ask: the asking actor, whose promise ``reply_name`` the reply resolves."""
    reply_name: str | None


class EntryRow(NamedTuple):
    """One journal entry to append (make it with :func:`entry_row`); the backend adds its position."""

    actor: int
    seq: int
    message: int
    """The id of the message whose step wrote it."""
    kind: str
    """An :class:`EntryKind`."""
    type: str
    data: bytes
    at: float
    crc: int
    """CRC-32 of ``data``, checked whenever the entry is read."""


class SnapshotRow(NamedTuple):
    """The actor's state after every event with ``seq`` or less (make it with :func:`snapshot_row`)."""

    actor: int
    seq: int
    type: str
    data: bytes
    at: float
    crc: int
    """CRC-32 of ``data``."""


_new = tuple.__new__


def entry_row(actor: int, seq: int, message: int, kind: str, type: str, data: bytes, at: float) -> EntryRow:
    """A journal entry with its checksum.

    Made here, once, rather than by the backend: a step builds a few of these
    for every message, and ``tuple.__new__`` with the checksum in place costs
    a third of a NamedTuple call plus the backend's copy with a checksum
    added (measured; see docs/performance.md).
    """
    return _new(EntryRow, (actor, seq, message, kind, type, data, at, crc32(data)))


def snapshot_row(actor: int, seq: int, type: str, data: bytes, at: float) -> SnapshotRow:
    """A snapshot with its checksum."""
    return _new(SnapshotRow, (actor, seq, type, data, at, crc32(data)))


class ActorRow(NamedTuple):
    """A new actor's registration (journal rows name actors by ``id``)."""

    id: int
    address: str
    type: str
    at: float


# -- what reads return ------------------------------------------------------------------------


class Entry(msgspec.Struct, frozen=True):
    """One journal entry."""

    position: int
    actor: str
    seq: int
    step: int
    """The id of the message whose step wrote this entry."""
    kind: str
    """An :class:`EntryKind` (a str enum: it compares equal to its name)."""
    type: str
    data: bytes
    at: float

    def decoded(self) -> Any:
        """The payload decoded without a schema (dicts, lists, scalars)."""
        return decode_untyped(self.data)


class ActorInfo(msgspec.Struct, frozen=True):
    """One row of the actor registry (``id`` is what journal rows name it by)."""

    id: int
    address: str
    type: str
    last_seq: int
    status: str
    reason: str | None
    updated: float
    floor: int = 0
    """The lowest seq whose state the journal keeps (a snapshot there, and every entry from there on);
    0 while the whole history is kept. Set by compaction (:class:`SetFloor`) and for a fork."""


class HistorySize(msgspec.Struct, frozen=True):
    """What one actor's history takes in the journal."""

    address: str
    entries: int
    """Journal entries stored (those below the floor that compaction has not yet removed included)."""
    bytes: int
    """Their payloads' bytes."""
    snapshots: int
    snapshot_bytes: int
    floor: int
    """See :attr:`ActorInfo.floor`."""


class Space(msgspec.Struct, frozen=True):
    """The storage a journal takes, and how much of it is free for reuse."""

    bytes: int
    """Everything the journal's storage holds (for a file: its pages, WAL excluded)."""
    free_bytes: int
    """Storage free for reuse: new entries fill it before the journal grows."""
    reclaimable: bool
    """Whether free storage can be given back (:class:`ReclaimSpace`) without rewriting the whole journal."""
    page_size: int = 0
    """The unit :class:`ReclaimSpace` counts in (0: the storage has no pages to give back)."""


class ActorSummary(msgspec.Struct, frozen=True):
    """One actor as an overview lists it: what it is doing, how long its journal is, what waits for it."""

    address: str
    type: str
    condition: str
    """An :class:`ActorCondition`."""
    status: str
    """An :class:`ActorStatus`."""
    reason: str | None
    """Why it is suspended."""
    last_seq: int
    """The length of its journal (its last sequence number)."""
    last_at: float | None
    """When its last entry was written (None: it has none)."""
    last_kind: str | None
    """The kind of its last entry (anything but ``reply`` while a step is open)."""
    last_step: int | None
    """The message id of its last step."""
    pending: int
    """Messages waiting in its inbox (timers not counted)."""
    timers: int
    """Durable timers pending for it."""
    dead_letters: int
    updated: float
    """When it was registered."""


class ActorPage(msgspec.Struct, frozen=True):
    """A page of actors in address order, and the cursors of the pages around it."""

    actors: list[ActorSummary]
    previous: str | None
    """Pass as ``before`` for the page before (None: this is the first)."""
    next: str | None
    """Pass as ``after`` for the page after (None: this is the last)."""


class JournalSummary(msgspec.Struct, frozen=True):
    """A journal at a glance: what an overview's header shows."""

    actors: int
    types: list[str]
    """The actor types, sorted."""
    last_position: int
    """The journal's last position (0 when empty)."""
    pending: int
    """Messages waiting in all inboxes (timers not counted)."""
    timers: int
    dead_letters: int
    suspended: int


class ResolvedPromise(msgspec.Struct, frozen=True):
    """A value resolved for a promise and not yet taken by the actor's handler."""

    name: str
    value: bytes
    at: float


class SnapshotInfo(msgspec.Struct, frozen=True, array_like=True):
    """A snapshot's position in an actor's history: ``(seq, at)``."""

    seq: int
    at: float


class Snapshot(msgspec.Struct, frozen=True):
    """A stored snapshot with its payload."""

    actor: str
    seq: int
    type: str
    data: bytes
    at: float
    crc: int | None = None
    """CRC-32 of ``data`` (None before schema version 5); whoever decodes it checks it."""

    @property
    def intact(self) -> bool:
        """Whether ``data`` matches its checksum (or has none)."""
        return self.crc is None or crc32(self.data) == self.crc


class Pending(msgspec.Struct, frozen=True):
    """A message waiting in the inbox."""

    id: int
    target: str
    handler: str
    type: str
    payload: bytes
    due: float | None
    idempotency_key: str | None
    """A client's idempotency key (never an internal marker)."""
    attempts: int
    sender: str | None
    at: float
    timer_id: str | None = None
    """A durable timer's id (timers only)."""
    reply_to: str | None = None
    """An actor's ask: the asking actor, whose promise ``reply_name`` the reply resolves."""
    reply_name: str | None = None


class Idempotent(msgspec.Struct, frozen=True):
    """What an idempotency key was first used for, and (for an ask) its reply."""

    key: str
    address: str
    step: int
    reply: bytes | None
    at: float
    kind: str | None = None
    """``tell`` or ``ask`` (None for keys recorded before schema version 6)."""
    handler: str | None = None
    """The handler the first call went to (None before schema version 6)."""


class DeadLetter(msgspec.Struct, frozen=True):
    """A message taken out of its actor's way after failing too often."""

    id: int
    address: str
    handler: str
    type: str
    payload: bytes
    sender: str | None
    attempts: int
    reason: str
    at: float


class PayloadStats(NamedTuple):
    """The journal's stored payloads: chunks, their bytes as stored (compressed) and as content."""

    chunks: int
    stored_bytes: int
    content_bytes: int
    reclaimable: int
    """Chunks no journal entry or snapshot is known to name (``kept = 0``): a reclaim deletes those nothing names."""
    dropped: int = 0
    """Of those, the chunks of history compaction removed, waiting for a reclaim to read the journal's references."""


class EntryPreview(msgspec.Struct, frozen=True):
    """One journal entry as a listing shows it: its payload decoded, long parts cut short.

    ``data`` equals :meth:`Entry.decoded` when ``truncated`` is false; otherwise
    long strings and binaries end early, long arrays and maps keep their first
    elements, and what is left out is named (see :func:`storage.preview`).
    Making one reads at most a bounded part of the value, however large.
    """

    position: int
    actor: str
    seq: int
    step: int
    kind: str
    type: str
    at: float
    size: int
    """The payload's length in bytes."""
    stored: bool
    """Whether the payload is stored once in the payload store (rather than in the entry's row)."""
    truncated: bool
    data: Any
class ActorDetail(msgspec.Struct, frozen=True):
    """One actor with what waits for it: the side panel of its page."""

    summary: ActorSummary
    pending: list[Pending]
    """Its inbox (messages and timers), oldest first, at most the ``limit`` asked for."""
    dead_letters: list[DeadLetter]
    promises: list[ResolvedPromise]


EventRow = tuple[int, int, str, bytes, int | None]
"""``(position, seq, type, data, crc)`` of one event; whoever decodes it checks the crc."""


# -- named operations ------------------------------------------------------------------------


class Op(msgspec.Struct, frozen=True, gc=False):
    """Base of the named operations a unit may carry besides its rows."""


class PutMeta(Op, frozen=True, gc=False):
    """Record operator metadata (``value`` a str, an int of 64 bits, a float, or None)."""

    key: str
    value: str | int | float | None


class RecordKey(Op, frozen=True, gc=False):
    """An idempotency key: what it was first used for and, once known, an ask's reply."""

    key: str
    address: str
    message: int
    reply: bytes | None
    at: float
    kind: Literal["tell", "ask"]
    handler: str


class ForgetKey(Op, frozen=True, gc=False):
    """Forget an idempotency key, unless it was used anew at or after ``before``."""

    key: str
    before: float


class CancelTimer(Op, frozen=True, gc=False):
    """Remove a pending timer from the inbox."""

    timer_id: str


class PutPromise(Op, frozen=True, gc=False):
    """A value for a promise; ``replace=False`` fails the unit (an integrity error) if one waits already."""

    address: str
    name: str
    value: bytes
    at: float
    replace: bool = False


class TakePromise(Op, frozen=True, gc=False):
    """Take a promise's value: the step journaling it commits this in the same unit."""

    address: str
    name: str


class SetStatus(Op, frozen=True, gc=False):
    """Suspend or resume an actor."""

    address: str
    status: str
    """An :class:`ActorStatus`."""
    reason: str | None = None


class MarkAttempt(Op, frozen=True, gc=False):
    """Record how often a recovered message was attempted, before it runs again."""

    message: int
    attempts: int


class Bury(Op, frozen=True, gc=False):
    """Move a message from the inbox to the dead letters, with why."""

    message: int
    attempts: int
    reason: str
    at: float


class Revive(Op, frozen=True, gc=False):
    """Move a dead letter back into the inbox, its attempts reset."""

    letter: int
    at: float


class DropDeadLetter(Op, frozen=True, gc=False):
    """Forget a dead letter."""

    letter: int


class Reclaim(Op, frozen=True, gc=False):
    """Delete the stored payloads nothing refers to any more (see docs/payloads.md).

    ``Reclaim()``: the chunks no journal entry or snapshot ever named (an
    inbox message's, a key's reply's, a promise's, a dead letter's), in this
    one transaction. The chunks of history compaction removed take a staged
    reclaim, so that reading the journal's references never holds the writer:
    ``Reclaim(begin=True)`` (from its commit on, the writer notes the chunks
    history written or removed meanwhile names), then
    :meth:`Reads.unreferenced_chunks` on a reader, then ``Reclaim(chunks=...,
    named=...)`` with bounded parts of its answer, the last with ``last=True``.
    A backend that keeps every value in its row does nothing.
    """

    begin: bool = False
    chunks: tuple[int, ...] | None = None
    """Dropped chunks no journal entry or snapshot named: deleted if nothing else names them."""
    named: tuple[int, ...] = ()
    """Dropped chunks a journal entry or snapshot named: kept again."""
    last: bool = False


class SetFloor(Op, frozen=True, gc=False):
    """Keep ``address``'s history from seq ``seq`` on (see :attr:`ActorInfo.floor`).

    Reads stop serving anything below it at once. A floor never moves down,
    and only onto a seq where the actor has a snapshot (otherwise nothing changes).
    """

    address: str
    seq: int


class DropHistory(Op, frozen=True, gc=False):
    """Remove actor ``actor``'s entries with seq in ``[from_seq, below_seq)`` and its snapshots below ``below_seq``.

    Never anything at or above the actor's floor, whatever the bounds say:
    compaction moves the floor first, in a unit of its own, then drops what
    lies below it in bounded batches (so one batch never holds the writer long).
    """

    actor: int
    from_seq: int
    below_seq: int


class ReclaimSpace(Op, frozen=True, gc=False):
    """Give up to ``pages`` free pages of storage back to the file system (a backend that cannot does nothing)."""

    pages: int


# -- units ---------------------------------------------------------------------------------


class Unit:
    """Rows and operations for one atomic change: they commit together or not at all.

    ``consumed``: inbox ids the unit processes (it fails alone, with
    :class:`~errors.UnconsumedError`, if one is no longer pending). ``register``:
    a new actor's row. ``top``: the highest message id the unit uses, so the
    backend can keep the durable high-water mark of message ids. ``fence``:
    ``(shard, generation)`` of the lease the unit's node must still hold when it
    commits (many nodes on one database; None: no lease needed), or it fails
    alone with :class:`~errors.LeaseLostError`.
    """

    __slots__ = ("consumed", "fence", "inbox", "journal", "ops", "register", "snapshots", "top")

    def __init__(
        self,
        *,
        inbox: Sequence[InboxRow] = (),
        journal: Sequence[EntryRow] = (),
        snapshots: Sequence[SnapshotRow] = (),
        consumed: Sequence[int] = (),
        register: ActorRow | None = None,
        ops: Sequence[Op] = (),
        top: int = 0,
        fence: tuple[int, int] | None = None,
    ) -> None:
        self.fence = fence
        self.inbox = inbox
        self.journal = journal
        self.snapshots = snapshots
        self.consumed = consumed
        self.register = register
        self.ops = ops
        self.top = top


Outcome = SteleError | None
"""None when the unit committed, else why it did not (a definite failure, or
:class:`~errors.CommitUnknownError` when it may or may not have)."""

Done = Callable[[list[Outcome]], None]
"""Called (by ``notify``'s caller) with one outcome per submitted unit, in order."""

Notify = Callable[[list[tuple[Done, list[Outcome]]]], None]
"""Called from the backend's writer once per batch with every submission's outcomes."""


class WriterStats:
    """The writer's counters, read by ``rt.statistics()`` and the benchmarks."""

    __slots__ = ("batches", "commit_seconds", "units")

    def __init__(self) -> None:
        self.batches = 0
        self.units = 0
        self.commit_seconds = 0.0


# -- the protocols ---------------------------------------------------------------------------


class ValueReader(Protocol):
    """One entry's value, read a piece at a time (``storage.StoredValue``): a 50 MB value is never held whole."""

    size: int

    def read(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes from ``offset`` (fewer at the end)."""
        ...

    def pieces(self) -> Iterator[bytes]:
        """The value's bytes, piece by piece, in order (checked against its checksum at the end)."""
        ...


class Reads(Protocol):
    """What a journal answers: the read-only :class:`~storage.Journal` and every backend."""

    def actor(self, address: str) -> ActorInfo | None:
        """One actor's registry row (with its last sequence number), or None."""
        ...

    def actors(self, type: str | None = None) -> list[ActorInfo]:
        """Every actor the journal knows (of one type), by address."""
        ...

    def entries(self, actor: str, from_seq: int = 0, kind: str | None = None) -> Iterator[Entry]:
        """An actor's entries from ``from_seq`` (and its floor) on, in order (optionally of one kind)."""
        ...

    def entry_previews(
        self, actor: str, from_seq: int = 0, kind: str | None = None, limit: int = 100
    ) -> list[EntryPreview]:
        """A page of up to ``limit`` entries for a listing, long parts cut short (bounded reads).

        A page of many large payloads may hold fewer entries: it reads a
        bounded number of bytes in all; the next page starts after its last.
        """
        ...

    def entry_value(self, actor: str, seq: int) -> ValueReader | None:
        """One entry's value, to read piece by piece, or None: how a whole value is served."""
        ...

    def payload_stats(self) -> PayloadStats:
        """The stored payloads: chunks, bytes as stored and as content, how many may be reclaimed."""
        ...

    def payload_problems(self) -> Iterator[str]:
        """Every stored payload chunk read back and checked (CRC-32, decompression, length, SHA-256): what is wrong."""
        ...

    def unreferenced_chunks(self) -> tuple[list[int], list[int]]:
        """``(unnamed, named)``: the chunks of removed history that no remaining journal entry or snapshot
        names, and those one still names (one read snapshot).

        The reader's step of a staged :class:`Reclaim`; empty where nothing is
        stored as chunks, or when a reference cannot be read.
        """
        ...

    def stream_entries(self, actor: str, from_seq: int = 0, limit: int = 500) -> list[Entry]:
        """Up to ``limit`` entries of the actor's stream (see :data:`STREAMED`) with ``seq >= from_seq``, in order."""
        ...

    def snapshots(self, actor: str) -> Iterator[SnapshotInfo]:
        """``(seq, at)`` of every snapshot of ``actor`` from its floor on, oldest first."""
        ...

    def snapshot(self, actor: str, before: int | None = None) -> Snapshot | None:
        """The newest snapshot of ``actor`` (older than ``before``, not below its floor), with its payload."""
        ...

    def snapshot_of(self, actor_id: int, address: str, before: int | None = None) -> Snapshot | None:
        """The newest snapshot of actor ``actor_id`` (older than ``before``, not below its floor)."""
        ...

    def event_rows(self, actor_id: int, after_seq: int = 0, until_seq: int | None = None) -> list[EventRow]:
        """``(position, seq, type, data, crc)`` of the actor's events in ``(after_seq, until_seq]``.

        Raises :class:`~errors.OutsideRetentionError` when ``after_seq`` lies
        below the actor's floor: the events between were compacted away (a
        state read from an older snapshot while compaction moved the floor
        must not be completed with a hole in it).
        """
        ...

    def open_step(self, actor_id: int, address: str) -> list[Entry]:
        """Entries of the actor's step interrupted by a crash (message first), or []."""
        ...

    def seq_at(self, actor: str, position: int) -> int:
        """The actor's last sequence number at journal ``position`` (time travel).

        Raises :class:`~errors.OutsideRetentionError` for a position before the
        entry at the actor's floor: its history there is not kept.
        """
        ...

    def history_sizes(self) -> list[HistorySize]:
        """What each actor's history takes (entries, snapshots and their bytes), by address."""
        ...

    def history_size(self, actor: str) -> HistorySize | None:
        """What one actor's history takes (None: no such actor)."""
        ...

    def lowest_seq(self, actor: str) -> int | None:
        """The lowest seq stored for ``actor``, what lies below its floor included (None: nothing stored).

        Only compaction asks: it drops what lies below the floor from there on.
        """
        ...

    def space(self) -> Space:
        """The storage the journal takes, and how much of it is free."""
        ...

    def entries_page(
        self, actor: str, *, after_seq: int | None = None, before_seq: int | None = None, limit: int = 100
    ) -> list[Entry]:
        """Up to ``limit`` of the actor's entries, oldest first: those after ``after_seq``, else the
        last ones before ``before_seq`` (else its last ones). Fast at any depth of a long journal."""
        ...

    def entry(self, position: int) -> Entry | None:
        """The entry at journal ``position``, or None."""
        ...

    def summary(self) -> JournalSummary:
        """The journal at a glance: actors, types, last position, inbox, dead letters, suspended."""
        ...

    def actor_page(
        self,
        *,
        after: str | None = None,
        before: str | None = None,
        limit: int = 50,
        type: str | None = None,
        search: str | None = None,
        condition: str | None = None,
    ) -> ActorPage:
        """Up to ``limit`` actors in address order, after the address ``after`` or before ``before``;
        of one ``type``, whose key contains ``search`` (case-insensitive), in one ``condition`` (an
        :class:`ActorCondition`, or ``dead_letters``). Fast with any number of actors."""
        ...

    def actor_detail(self, address: str, limit: int = 100) -> ActorDetail | None:
        """One actor's summary, inbox (up to ``limit``), dead letters and resolved promises."""
        ...

    def pending(self) -> list[Pending]:
        """Messages waiting in the inbox, in message-id order."""
        ...

    def idempotent(self, key: str) -> Idempotent | None:
        """What an idempotency key was first used for (and an ask's reply), if it was."""
        ...

    def key_status(self, key: str, message: int) -> tuple[Idempotent | None, bool]:
        """An idempotency key's record and whether its message is still pending, read at once."""
        ...

    def expired_keys(self, cutoff: float, limit: int) -> list[str]:
        """Up to ``limit`` idempotency keys recorded before ``cutoff``, oldest first."""
        ...

    def promise(self, address: str, name: str) -> bytes | None:
        """A value resolved for ``address`` under ``name`` and not yet taken."""
        ...

    def dead_letters(self) -> list[DeadLetter]:
        """Messages taken out of their actors' way after failing too often."""
        ...

    def meta(self, key: str) -> Any:
        """A value recorded in the journal's meta table (None if absent)."""
        ...


class Backend(Reads, Protocol):
    """An owned journal: a writer that group-commits units, and the reads above.

    Reads may be called from any thread. :meth:`submit` queues units for the
    writer, which commits whatever queued while its last commit ran into the
    next transaction, each unit whole or not at all, one failing unit never
    failing the others, and reports each unit's outcome through ``notify``.
    """

    path: str
    """Where the journal is (a file's path, or a URL)."""
    step_hwm: int
    """At least the highest message id any durable row uses (message ids are never reused;
    a backend may reserve them in blocks, so new ids start above this)."""
    actor_hwm: int
    """The highest actor id in the registry."""

    @property
    def failing(self) -> SteleError | None:
        """Why commits are failing (a full disk, an I/O error), or None while they succeed."""
        ...

    @property
    def stats(self) -> WriterStats:
        """The writer's counters."""
        ...

    def submit(self, units: Sequence[Unit], done: Done) -> None:
        """Queue units for the next group commit; ``done`` gets their outcomes."""
        ...

    def submit_all(self, groups: Sequence[tuple[Sequence[Unit], Done]]) -> None:
        """Queue several submissions at once: the writer takes them into one batch."""
        ...

    def close(self) -> None:
        """Commit what is queued, stop the writer, release the journal."""
        ...

    def abandon(self) -> None:
        """Drop what is queued and let go, as a crash would (for tests)."""
        ...
