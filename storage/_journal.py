"""Read-only access to a journal, a file or a database: what the CLI, replay tools and tests read through.

``Journal.open(location)`` opens a SQLite file, or a PostgreSQL database when
the location is a ``postgresql://`` URL; both answer the same reads
(:class:`~storage.Reads`), and both work while a runtime owns the journal.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Protocol

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
    Reads,
    Snapshot,
    SnapshotInfo,
    Space,
    ValueReader,
)
from ._errors import StorageError
from ._pg_connect import is_postgres
from ._pg_journal import PgJournal
from ._sqlite_journal import SqliteJournal
from ._sqlite_journal import integrity_check as sqlite_integrity_check


class _Opened(Reads, Protocol):
    path: str

    def last_position(self) -> int: ...

    def version(self) -> int: ...

    def after(self, position: int, until: int | None = None) -> tuple[int, float | None]: ...

    def close(self) -> None: ...


class Journal:
    """An open journal. Use :meth:`open`; close it, or use it as a context manager."""

    def __init__(self, opened: _Opened) -> None:
        self._opened = opened
        self.path = opened.path
        """The file's path, or the database's URL without its password."""

    @classmethod
    def open(cls, location: str, readonly: bool = True) -> Journal:
        """Open the journal at ``location`` (a path, or a ``postgresql://`` URL).

        Read-only (the default) never writes and works beside a runtime.
        ``readonly=False`` takes ownership of a file (for maintenance tools),
        and so fails while a runtime owns it; a database is owned by runtimes only.
        """
        if is_postgres(location):
            if not readonly:
                raise ValueError("Journal.open(url, readonly=False): a PostgreSQL journal is owned by runtimes only")
            return cls(PgJournal.open(location))
        return cls(SqliteJournal.open(location, readonly))

    @property
    def postgres(self) -> bool:
        """Whether the journal is a PostgreSQL database."""
        return isinstance(self._opened, PgJournal)

    def stored_bytes(self) -> tuple[int, int | None]:
        """What the journal takes: a file's bytes and its WAL's, or a database's tables (WAL None)."""
        if isinstance(self._opened, PgJournal):
            return self._opened.stored_bytes(), None
        return _size(self.path), _size(self.path + "-wal")

    def actor(self, address: str) -> ActorInfo | None:
        """One actor's registry row (with its last sequence number), or None."""
        return self._opened.actor(address)

    def actors(self, type: str | None = None) -> list[ActorInfo]:
        """Every actor the journal knows (of one type), by address."""
        return self._opened.actors(type)

    def entries(self, actor: str, from_seq: int = 0, kind: str | None = None) -> Iterator[Entry]:
        """An actor's entries from ``from_seq`` on, in order (optionally of one kind)."""
        return self._opened.entries(actor, from_seq, kind)

    def entry_previews(
        self, actor: str, from_seq: int = 0, kind: str | None = None, limit: int = 100
    ) -> list[EntryPreview]:
        """A page of up to ``limit`` entries for a listing, long parts cut short (bounded reads)."""
        return self._opened.entry_previews(actor, from_seq, kind, limit)

    def entry_value(self, actor: str, seq: int) -> ValueReader | None:
        """One entry's value, to read piece by piece (``size``, ``read``, ``pieces``), or None."""
        return self._opened.entry_value(actor, seq)

    def payload_problems(self) -> Iterator[str]:
        """Every stored payload chunk read back and checked: what is wrong (nothing on PostgreSQL)."""
        return self._opened.payload_problems()

    def payload_stats(self) -> PayloadStats:
        """The stored payloads: chunks, bytes as stored and as content, how many may be reclaimed."""
        return self._opened.payload_stats()

    def unreferenced_chunks(self) -> tuple[list[int], list[int]]:
        """``(unnamed, named)``: removed history's chunks no journal entry or snapshot names, and the rest."""
        return self._opened.unreferenced_chunks()

    def stream_entries(self, actor: str, from_seq: int = 0, limit: int = 500) -> list[Entry]:
        """Up to ``limit`` entries of the actor's stream with ``seq >= from_seq``, in order."""
        return self._opened.stream_entries(actor, from_seq, limit)

    def snapshots(self, actor: str) -> Iterator[SnapshotInfo]:
        """``(seq, at)`` of every snapshot of ``actor``, oldest first."""
        return self._opened.snapshots(actor)

    def snapshot(self, actor: str, before: int | None = None) -> Snapshot | None:
        """The newest snapshot of ``actor`` (older than ``before``), with its payload."""
        return self._opened.snapshot(actor, before)

    def snapshot_of(self, actor_id: int, address: str, before: int | None = None) -> Snapshot | None:
        """The newest snapshot of actor ``actor_id`` (older than ``before``)."""
        return self._opened.snapshot_of(actor_id, address, before)

    def event_rows(self, actor_id: int, after_seq: int = 0, until_seq: int | None = None) -> list[EventRow]:
        """``(position, seq, type, data, crc)`` of actor ``actor_id``'s events in ``(after_seq, until_seq]``."""
        return self._opened.event_rows(actor_id, after_seq, until_seq)

    def open_step(self, actor_id: int, address: str) -> list[Entry]:
        """Entries of the actor's step interrupted by a crash (message first), or []."""
        return self._opened.open_step(actor_id, address)

    def seq_at(self, actor: str, position: int) -> int:
        """The actor's last sequence number at journal ``position`` (time travel); OutsideRetentionError
        before what it keeps."""
        return self._opened.seq_at(actor, position)

    def history_sizes(self) -> list[HistorySize]:
        """What each actor's history takes (entries, snapshots and their bytes), by address."""
        return self._opened.history_sizes()

    def history_size(self, actor: str) -> HistorySize | None:
        """What one actor's history takes (None: no such actor)."""
        return self._opened.history_size(actor)

    def lowest_seq(self, actor: str) -> int | None:
        """The lowest seq stored for ``actor``, what lies below its floor included (None: nothing stored)."""
        return self._opened.lowest_seq(actor)

    def space(self) -> Space:
        """The storage the journal takes, and how much of it is free."""
        return self._opened.space()

    def pending(self) -> list[Pending]:
        """Messages waiting in the inbox, in message-id order."""
        return self._opened.pending()

    def idempotent(self, key: str) -> Idempotent | None:
        """What an idempotency key was first used for (and an ask's reply), if it was."""
        return self._opened.idempotent(key)

    def key_status(self, key: str, message: int) -> tuple[Idempotent | None, bool]:
        """An idempotency key's record and whether its message is still pending, read at once."""
        return self._opened.key_status(key, message)

    def expired_keys(self, cutoff: float, limit: int) -> list[str]:
        """Up to ``limit`` idempotency keys recorded before ``cutoff``, oldest first."""
        return self._opened.expired_keys(cutoff, limit)

    def promise(self, address: str, name: str) -> bytes | None:
        """A value resolved for ``address`` under ``name`` and not yet taken."""
        return self._opened.promise(address, name)

    def dead_letters(self) -> list[DeadLetter]:
        """Messages taken out of their actors' way after failing too often."""
        return self._opened.dead_letters()

    def meta(self, key: str) -> Any:
        """A value recorded in the journal's meta table (None if absent)."""
        return self._opened.meta(key)

    def version(self) -> int:
        """A number that changes whenever another connection has committed to the journal since the
        last call: watching a journal that another process writes costs one cheap read."""
        return self._opened.version()

    def entries_page(
        self, actor: str, *, after_seq: int | None = None, before_seq: int | None = None, limit: int = 100
    ) -> list[Entry]:
        """Up to ``limit`` of the actor's entries, oldest first: those after ``after_seq``, else the
        last ones before ``before_seq`` (else its last ones)."""
        return self._opened.entries_page(actor, after_seq=after_seq, before_seq=before_seq, limit=limit)

    def entry(self, position: int) -> Entry | None:
        """The entry at journal ``position``, or None."""
        return self._opened.entry(position)

    def summary(self) -> JournalSummary:
        """The journal at a glance: actors, types, last position, inbox, dead letters, suspended."""
        return self._opened.summary()

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
        return self._opened.actor_page(
            after=after, before=before, limit=limit, type=type, search=search, condition=condition
        )

    def actor_detail(self, address: str, limit: int = 100) -> ActorDetail | None:
        """One actor's summary, inbox (up to ``limit``), dead letters and resolved promises."""
        return self._opened.actor_detail(address, limit)

    def last_position(self) -> int:
        """The highest journal position (0 for an empty journal)."""
        return self._opened.last_position()

    def after(self, position: int, until: int | None = None) -> tuple[int, float | None]:
        """How many entries lie past ``position`` (up to ``until``), and when the first of them was written.

        What a replica ending at ``position`` lacks of this journal: a drill's
        measure of how far behind it is.
        """
        return self._opened.after(position, until)

    def close(self) -> None:
        """Close it (and give up ownership of a file if it was taken)."""
        self._opened.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, tp: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _size(path: str) -> int:
    return os.path.getsize(path) if os.path.exists(path) else 0


def integrity_check(location: str) -> str:
    """``"ok"``, or what is wrong with the journal's structure (read-only; works beside a running owner).

    A file: SQLite's ``integrity_check``. A database: its tables are there and
    none of its indexes is invalid (PostgreSQL keeps the structure itself). A
    journal too broken to open or check says so in the answer rather than
    raising: it is the answer.
    """
    if not is_postgres(location):
        return sqlite_integrity_check(location)
    try:
        journal = PgJournal.open(location)
    except StorageError as exc:
        return f"cannot check the database: {exc}"
    try:
        return journal.integrity()
    except StorageError as exc:
        return f"cannot check the database: {exc}"
    finally:
        journal.close()
