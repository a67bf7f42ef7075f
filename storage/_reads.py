"""The reads the runtime and the inspection tools share, over one connection each."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar

import apsw

from . import _browse, _payload_store, _rows
from ._contract import (
    ActorDetail,
    ActorInfo,
    ActorPage,
    DeadLetter,
    Entry,
    EntryPreview,
    EventRow,
    HistorySize,
    Idempotent,
    JournalSummary,
    PayloadStats,
    Pending,
    Snapshot,
    SnapshotInfo,
    Space,
)
from ._payload_store import StoredValue

P = ParamSpec("P")
T = TypeVar("T")


def _payload_problems(conn: apsw.Connection) -> Iterator[str]:
    for problem in _payload_store.verify(conn):
        yield problem.problem


class SqliteReads(abc.ABC):
    """Read access to a journal; subclasses say how a query meets a connection."""

    @abc.abstractmethod
    def _read(self, query: Callable[Concatenate[apsw.Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``query(connection, *args)``, translating driver errors."""

    @abc.abstractmethod
    def _iterate(
        self, query: Callable[Concatenate[apsw.Connection, P], Iterator[T]], *args: P.args, **kwargs: P.kwargs
    ) -> Iterator[T]:
        """Like :meth:`_read` for a query that yields rows."""

    def actor(self, address: str) -> ActorInfo | None:
        """One actor's registry row (with its last sequence number), or None."""
        return self._read(_rows.actor, address)

    def actors(self, type: str | None = None) -> list[ActorInfo]:
        """Every actor the journal knows (of one type), by address."""
        return self._read(_rows.actors, type)

    def entries(self, actor: str, from_seq: int = 0, kind: str | None = None) -> Iterator[Entry]:
        """An actor's entries from ``from_seq`` on, in order (optionally of one kind)."""
        ident = self._read(_rows.actor_id, actor)
        if ident is None:
            return iter(())
        return self._iterate(_rows.entries, ident, actor, from_seq, kind)

    def entry_previews(
        self, actor: str, from_seq: int = 0, kind: str | None = None, limit: int = 100
    ) -> list[EntryPreview]:
        """A page of an actor's entries for a listing: each decoded, long parts cut short.

        However large an entry's payload, making its preview reads a bounded
        part of it (see :mod:`storage._preview`).
        """
        ident = self._read(_rows.actor_id, actor)
        if ident is None:
            return []
        return self._read(_rows.previews, ident, actor, from_seq, kind, limit)

    def entry_value(self, actor: str, seq: int) -> StoredValue | None:
        """One entry's payload, to read piece by piece (``size``, ``read``, ``pieces``), or None.

        Streams a value of any size with one chunk in memory at a time.
        """
        ident = self._read(_rows.actor_id, actor)
        stored = self._read(_rows.entry_value, ident, seq) if ident is not None else None
        if stored is None:
            return None
        return StoredValue(stored, lambda chunk, length: self._read(_payload_store.chunk, chunk, length))

    def payload_problems(self) -> Iterator[str]:
        """Every stored chunk read back and checked (CRC-32, decompression, length, SHA-256): what is wrong."""
        return self._iterate(_payload_problems)

    def payload_stats(self) -> PayloadStats:
        """The stored payloads: chunks, bytes as stored and as content, how many may be reclaimed."""
        return self._read(_payload_store.stats)

    def unreferenced_chunks(self) -> tuple[list[int], list[int]]:
        """``(unnamed, named)``: removed history's chunks no journal entry or snapshot names, and the rest."""
        return self._read(_payload_store.unreferenced)

    def stream_entries(self, actor: str, from_seq: int = 0, limit: int = 500) -> list[Entry]:
        """Up to ``limit`` entries of the actor's stream with ``seq >= from_seq``, in order."""
        ident = self._read(_rows.actor_id, actor)
        if ident is None:
            return []
        return self._read(_rows.stream_entries, ident, actor, from_seq, limit)

    def snapshots(self, actor: str) -> Iterator[SnapshotInfo]:
        """``(seq, at)`` of every snapshot of ``actor``, oldest first."""
        ident = self._read(_rows.actor_id, actor)
        return iter(self._read(_rows.snapshots, ident) if ident is not None else ())

    def snapshot(self, actor: str, before: int | None = None) -> Snapshot | None:
        """The newest snapshot of ``actor`` (older than ``before``), with its payload."""
        ident = self._read(_rows.actor_id, actor)
        return self.snapshot_of(ident, actor, before) if ident is not None else None

    def idempotent(self, key: str) -> Idempotent | None:
        """What an idempotency key was first used for (and an ask's reply), if it was."""
        return self._read(_rows.idempotent, key)

    def expired_keys(self, cutoff: float, limit: int) -> list[str]:
        """Up to ``limit`` idempotency keys recorded before ``cutoff``, oldest first."""
        return self._read(_rows.expired_keys, cutoff, limit)

    def key_status(self, key: str, step: int) -> tuple[Idempotent | None, bool]:
        """An idempotency key's record and whether its step's message is still pending (one read)."""
        return self._read(_rows.key_status, key, step)

    def promise(self, address: str, name: str) -> bytes | None:
        """A value resolved for ``address`` under ``name`` and not yet taken."""
        return self._read(_rows.promise, address, name)

    def dead_letters(self) -> list[DeadLetter]:
        """Messages taken out of their actors' way after failing too often."""
        return self._read(_rows.dead_letters)

    def meta(self, key: str) -> Any:
        """A value recorded in the journal's meta table (``None`` if absent)."""
        return self._read(_rows.meta, key)

    def pending(self) -> list[Pending]:
        """Messages waiting in the inbox, in step-id order."""
        return self._read(_rows.pending)

    # By actor id: what rebuilding an actor reads, without looking the id up again.

    def snapshot_of(self, actor_id: int, address: str, before: int | None = None) -> Snapshot | None:
        """The newest snapshot of actor ``actor_id`` (older than ``before``)."""
        return self._read(_rows.snapshot, actor_id, address, before)

    def event_rows(self, actor_id: int, after_seq: int = 0, until_seq: int | None = None) -> list[EventRow]:
        """``(position, seq, type, data, crc)`` of actor ``actor_id``'s events in ``(after_seq, until_seq]``."""
        return self._read(_rows.event_rows, actor_id, after_seq, until_seq)

    def seq_at(self, actor: str, position: int) -> int:
        """The actor's last sequence number at journal ``position`` (time travel).

        Raises :class:`~errors.OutsideRetentionError` for a position before its kept history.
        """
        ident = self._read(_rows.actor_id, actor)
        return self._read(_rows.seq_at, ident, position, actor) if ident is not None else 0

    def history_sizes(self) -> list[HistorySize]:
        """What each actor's history takes (entries, snapshots and their bytes), by address."""
        return self._read(_rows.history_sizes)

    def history_size(self, actor: str) -> HistorySize | None:
        """What one actor's history takes (None: no such actor)."""
        return self._read(_rows.history_size, actor)

    def lowest_seq(self, actor: str) -> int | None:
        """The lowest seq stored for ``actor``, what lies below its floor included (None: nothing stored)."""
        ident = self._read(_rows.actor_id, actor)
        return self._read(_rows.lowest_seq, ident) if ident is not None else None

    def space(self) -> Space:
        """The storage the journal takes, and how much of it is free."""
        return self._read(_rows.space)

    def open_step(self, actor_id: int, address: str) -> list[Entry]:
        """Entries of the actor's step interrupted by a crash (message first), or []."""
        return self._read(_rows.open_step, actor_id, address)

    # Browsing (the console): pages that stay fast at any size.

    def entries_page(
        self, actor: str, *, after_seq: int | None = None, before_seq: int | None = None, limit: int = 100
    ) -> list[Entry]:
        """Up to ``limit`` of the actor's entries, oldest first: those after ``after_seq``, else the
        last ones before ``before_seq`` (else its last ones)."""
        ident = self._read(_rows.actor_id, actor)
        if ident is None:
            return []
        return self._read(_browse.entries_page, ident, actor, after_seq, before_seq, limit)

    def entry(self, position: int) -> Entry | None:
        """The entry at journal ``position``, or None."""
        return self._read(_browse.entry, position)

    def summary(self) -> JournalSummary:
        """The journal at a glance: actors, types, last position, inbox, dead letters, suspended."""
        return self._read(_browse.summary)

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
        """Up to ``limit`` actors in address order after ``after`` or before ``before``, filtered."""
        return self._read(
            _browse.actor_page,
            after=after,
            before=before,
            limit=limit,
            type_name=type,
            search=search,
            condition=condition,
        )

    def actor_detail(self, address: str, limit: int = 100) -> ActorDetail | None:
        """One actor's summary, inbox (up to ``limit``), dead letters and resolved promises."""
        return self._read(_browse.actor_detail, address, limit)
