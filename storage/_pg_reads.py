"""The reads of a PostgreSQL journal, over connections handed out by a subclass."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar

from . import _pg_browse as browse
from . import _pg_previews as previews
from . import _pg_rows as rows
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
from ._pg_schema import TABLES

P = ParamSpec("P")
T = TypeVar("T")


class PgReads(abc.ABC):
    """Read access to a PostgreSQL journal; subclasses say how a query meets a connection."""

    @abc.abstractmethod
    def _read(self, query: Callable[Concatenate[Any, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``query(connection, *args)``, translating driver errors (and reconnecting once)."""

    def actor(self, address: str) -> ActorInfo | None:
        """One actor's registry row (with its last sequence number), or None."""
        return self._read(rows.actor, address)

    def actors(self, type: str | None = None) -> list[ActorInfo]:
        """Every actor the journal knows (of one type), by address."""
        return self._read(rows.actors, type)

    def entries(self, actor: str, from_seq: int = 0, kind: str | None = None) -> Iterator[Entry]:
        """An actor's entries from ``from_seq`` on, in order (optionally of one kind), a page at a time."""
        ident = self._read(rows.actor_id, actor)
        if ident is None:
            return iter(())
        return self._pages(ident, actor, from_seq, kind)

    def stream_entries(self, actor: str, from_seq: int = 0, limit: int = 500) -> list[Entry]:
        """Up to ``limit`` entries of the actor's stream with ``seq >= from_seq``, in order."""
        ident = self._read(rows.actor_id, actor)
        if ident is None:
            return []
        return self._read(rows.stream_entries, ident, actor, from_seq, limit)

    def _pages(self, ident: int, address: str, from_seq: int, kind: str | None) -> Iterator[Entry]:
        while True:
            page = self._read(rows.entries_page, ident, address, from_seq, kind, rows.PAGE)
            yield from page
            if len(page) < rows.PAGE:
                return
            from_seq = page[-1].seq + 1

    def entry_previews(
        self, actor: str, from_seq: int = 0, kind: str | None = None, limit: int = 100
    ) -> list[EntryPreview]:
        """A page of an actor's entries for a listing: each decoded, long parts cut short.

        However large an entry's value, its preview reads a bounded part of it
        (``substring`` ranges; see :mod:`storage._pg_previews`).
        """
        ident = self._read(rows.actor_id, actor)
        if ident is None:
            return []
        return self._read(previews.previews, ident, actor, from_seq, kind, limit)

    def entry_value(self, actor: str, seq: int) -> StoredValue | None:
        """One entry's value, to read piece by piece (``size``, ``read``, ``pieces``), or None.

        Streams a value of any size a megabyte at a time; its crc is checked at the end.
        """
        ident = self._read(rows.actor_id, actor)
        found = self._read(previews.value_info, ident, seq) if ident is not None else None
        if found is None:
            return None
        position, size, crc = found
        step = previews.VALUE_RANGE

        def fetch(index: int, length: int) -> bytes:
            return self._read(previews.value_range, position, index * step, length)

        return StoredValue.ranges(size, crc, fetch, step)

    def payload_problems(self) -> Iterator[str]:
        """Nothing: a PostgreSQL journal keeps every value in its row (each checked by its crc when read)."""
        return iter(())

    def payload_stats(self) -> PayloadStats:
        """No stored payloads: a PostgreSQL journal keeps every value in its row (docs/payloads.md)."""
        return PayloadStats(0, 0, 0, 0)

    def unreferenced_chunks(self) -> tuple[list[int], list[int]]:
        """None: a PostgreSQL journal keeps every value in its row."""
        return [], []

    def snapshots(self, actor: str) -> Iterator[SnapshotInfo]:
        """``(seq, at)`` of every snapshot of ``actor``, oldest first."""
        ident = self._read(rows.actor_id, actor)
        return iter(self._read(rows.snapshots, ident) if ident is not None else ())

    def snapshot(self, actor: str, before: int | None = None) -> Snapshot | None:
        """The newest snapshot of ``actor`` (older than ``before``), with its payload."""
        ident = self._read(rows.actor_id, actor)
        return self.snapshot_of(ident, actor, before) if ident is not None else None

    def snapshot_of(self, actor_id: int, address: str, before: int | None = None) -> Snapshot | None:
        """The newest snapshot of actor ``actor_id`` (older than ``before``)."""
        return self._read(rows.snapshot, actor_id, address, before)

    def event_rows(self, actor_id: int, after_seq: int = 0, until_seq: int | None = None) -> list[EventRow]:
        """``(position, seq, type, data, crc)`` of actor ``actor_id``'s events in ``(after_seq, until_seq]``."""
        return self._read(rows.event_rows, actor_id, after_seq, until_seq)

    def open_step(self, actor_id: int, address: str) -> list[Entry]:
        """Entries of the actor's step interrupted by a crash (message first), or []."""
        return self._read(rows.open_step, actor_id, address)

    def seq_at(self, actor: str, position: int) -> int:
        """The actor's last sequence number at journal ``position`` (time travel).

        Raises :class:`~errors.OutsideRetentionError` for a position before its kept history.
        """
        ident = self._read(rows.actor_id, actor)
        return self._read(rows.seq_at, ident, position, actor) if ident is not None else 0

    def history_sizes(self) -> list[HistorySize]:
        """What each actor's history takes (entries, snapshots and their bytes), by address."""
        return self._read(rows.history_sizes)

    def history_size(self, actor: str) -> HistorySize | None:
        """What one actor's history takes (None: no such actor)."""
        return self._read(rows.history_size, actor)

    def lowest_seq(self, actor: str) -> int | None:
        """The lowest seq stored for ``actor``, what lies below its floor included (None: nothing stored)."""
        return self._read(rows.lowest_seq, actor)

    def space(self) -> Space:
        """What the journal's tables take on the server (PostgreSQL gives no space back by itself)."""
        return self._read(rows.space, TABLES)

    def pending(self) -> list[Pending]:
        """Messages waiting in the inbox, in message-id order."""
        return self._read(rows.pending)

    def idempotent(self, key: str) -> Idempotent | None:
        """What an idempotency key was first used for (and an ask's reply), if it was."""
        return self._read(rows.idempotent, key)

    def key_status(self, key: str, message: int) -> tuple[Idempotent | None, bool]:
        """An idempotency key's record and whether its message is still pending, read at once."""
        return self._read(rows.key_status, key, message)

    def expired_keys(self, cutoff: float, limit: int) -> list[str]:
        """Up to ``limit`` idempotency keys recorded before ``cutoff``, oldest first."""
        return self._read(rows.expired_keys, cutoff, limit)

    def promise(self, address: str, name: str) -> bytes | None:
        """A value resolved for ``address`` under ``name`` and not yet taken."""
        return self._read(rows.promise, address, name)

    def dead_letters(self) -> list[DeadLetter]:
        """Messages taken out of their actors' way after failing too often."""
        return self._read(rows.dead_letters)

    def meta(self, key: str) -> Any:
        """A value recorded in the journal's meta table (None if absent)."""
        return self._read(rows.meta, key)

    # Browsing (the console): pages that stay fast at any size.

    def entries_page(
        self, actor: str, *, after_seq: int | None = None, before_seq: int | None = None, limit: int = 100
    ) -> list[Entry]:
        """Up to ``limit`` of the actor's entries, oldest first: those after ``after_seq``, else the
        last ones before ``before_seq`` (else its last ones)."""
        ident = self._read(rows.actor_id, actor)
        if ident is None:
            return []
        return self._read(browse.entries_page, ident, actor, after_seq, before_seq, limit)

    def entry(self, position: int) -> Entry | None:
        """The entry at journal ``position``, or None."""
        return self._read(browse.entry, position)

    def summary(self) -> JournalSummary:
        """The journal at a glance: actors, types, last position, inbox, dead letters, suspended."""
        return self._read(browse.summary)

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
            browse.actor_page,
            after=after,
            before=before,
            limit=limit,
            type_name=type,
            search=search,
            condition=condition,
        )

    def actor_detail(self, address: str, limit: int = 100) -> ActorDetail | None:
        """One actor's summary, inbox (up to ``limit``), dead letters and resolved promises."""
        return self._read(browse.actor_detail, address, limit)
