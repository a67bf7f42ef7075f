"""Compaction: remove the history an actor type's retention no longer keeps, in bounded batches.

For each actor of a type that declares a :class:`~actors.Retention`, the new
floor is the snapshot from which the retention keeps history (the
``snapshots``-th newest, or the newest older than ``age``; with both, the
older of the two). Moving the floor is one small commit: from then on reads
serve nothing below it and a position there raises
:class:`~errors.OutsideRetentionError`. What lies below is then deleted in
commits of at most ``batch`` sequence numbers each (several actors' in one
when they are small), awaited one after the other, so every other actor's
commits go on between them; an interrupted
compaction leaves entries below the floor, which the next one removes. The
stored payload chunks only the removed rows referred to are then reclaimed
(:meth:`Compactor.reclaim_payloads`, also in bounded commits). Last, the pages
freed go back to the file system in bounded steps (see docs/history.md for why
incremental vacuum and not VACUUM).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio.to_thread
import msgspec

import storage
from actors import Retention
from storage import DropHistory, Op, Reclaim, ReclaimSpace, SetFloor, Unit

from ._registry import Registry
from ._writes import Writes

DEFAULT_BATCH = 1000
"""Sequence numbers per delete: about a millisecond of the writer's time each, on this machine's disk."""
RECLAIM_CHUNKS = 2000
"""Candidate chunks per commit of a payload reclaim (a delete each, and one read of the transient tables)."""
RECLAIM_PAGES = 256
"""Pages (1 MiB at 4 KiB) given back per commit."""


class CompactReport(msgspec.Struct):
    """What a compaction removed and gave back."""

    actors: int = 0
    """Actors whose floor moved or whose old history was removed."""
    entries: int = 0
    """Journal entries removed."""
    snapshots: int = 0
    """Snapshots removed (below the old floor, any an interrupted compaction left are removed but not counted)."""
    chunks: int = 0
    """Stored payload chunks fewer after than before (those only the removed history referred to)."""
    batches: int = 0
    """Commits it took (floors, deletes, payload reclaims and page returns)."""
    bytes_before: int = 0
    """The journal's storage before (its file's pages, WAL excluded)."""
    bytes_after: int = 0
    free_after: int = 0
    """Storage still free for reuse afterwards (a journal that cannot give pages back keeps them here)."""
    seconds: float = 0.0


class CompactionStatus(msgspec.Struct, frozen=True):
    """The compactions a runtime ran (see ``rt.statistics().compaction``)."""

    runs: int
    last: CompactReport
    last_at: float
    """When the last one ended (epoch seconds)."""


def new_floor(retention: Retention, snapshots: list[storage.SnapshotInfo], floor: int, now: float) -> int:
    """The floor ``retention`` asks for, given the snapshots from the current ``floor`` on (never lower than it)."""
    candidates = []
    if retention.snapshots is not None:
        candidates.append(snapshots[-retention.snapshots].seq if len(snapshots) >= retention.snapshots else floor)
    age = retention.age_s
    if age is not None:
        cutoff = now - age
        older = [s.seq for s in snapshots if s.at < cutoff]
        candidates.append(older[-1] if older else floor)
    return max(floor, min(candidates))


class Compactor:
    """Runs compactions over a runtime's journal (one at a time)."""

    def __init__(self, registry: Registry, writes: Writes, reads: storage.Reads, clock: Callable[[], float]) -> None:
        self._registry = registry
        self._writes = writes
        self._reads = reads
        self._clock = clock
        self._lock = anyio.Lock()
        self._reclaiming = anyio.Lock()  # one staged payload reclaim at a time: the writer notes for one
        self.status: CompactionStatus | None = None
        """The last compaction (None before the first)."""

    async def compact(self, *, batch: int = DEFAULT_BATCH, reclaim: bool = True) -> CompactReport:
        """Compact every actor whose type declares a retention; then give freed pages back."""
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        async with self._lock:
            started = time.perf_counter()
            report = CompactReport()
            report.bytes_before = (await anyio.to_thread.run_sync(self._reads.space)).bytes
            work = _Batches(self._writes, batch, report)
            for type_name, desc in self._registry.actors.items():
                retention = desc.cls.retention
                if retention is None:
                    continue
                for info in await anyio.to_thread.run_sync(self._reads.actors, type_name):
                    snapshots, lowest = await anyio.to_thread.run_sync(self._plan, info.address)
                    floor = new_floor(retention, snapshots, info.floor, self._clock())
                    if floor > info.floor:
                        # With the deletes below it, in the same unit: reads see both at once.
                        await work.add(SetFloor(info.address, floor), 0)
                        report.snapshots += sum(1 for s in snapshots if s.seq < floor)
                    if lowest is None or lowest >= floor:
                        report.actors += floor > info.floor
                        continue
                    report.actors += 1
                    report.entries += floor - lowest  # seqs are dense: everything below the floor goes
                    for start in range(lowest, floor, batch):
                        end = min(start + batch, floor)
                        await work.add(DropHistory(info.id, start, end), end - start)
            await work.flush()
            chunks = (await anyio.to_thread.run_sync(self._reads.payload_stats)).chunks
            report.batches += await self.reclaim_payloads()
            report.chunks = max(0, chunks - (await anyio.to_thread.run_sync(self._reads.payload_stats)).chunks)
            space = await anyio.to_thread.run_sync(self._reads.space)
            if reclaim and space.reclaimable:
                pages = space.free_bytes // max(1, space.page_size)
                while pages > 0:
                    await self._writes.write(Unit(ops=[ReclaimSpace(min(pages, RECLAIM_PAGES))]))
                    report.batches += 1
                    pages -= RECLAIM_PAGES
                space = await anyio.to_thread.run_sync(self._reads.space)
            report.bytes_after, report.free_after = space.bytes, space.free_bytes
            report.seconds = time.perf_counter() - started
            runs = self.status.runs + 1 if self.status is not None else 1
            self.status = CompactionStatus(runs, report, self._clock())
            return report

    async def reclaim_payloads(self) -> int:
        """Delete the stored payload chunks nothing refers to any more; the commits it took.

        First the chunks no journal entry or snapshot ever named, in one
        commit that reads the transient tables. Then, if compaction removed
        history, its chunks, staged so that no commit holds the writer for
        longer than a few thousand chunks: a commit from which the writer notes
        what history written or removed meanwhile names, one read transaction
        on a reader finding which of them a journal entry or snapshot still
        names, then commits of at most :data:`RECLAIM_CHUNKS` of them
        (storage/_payload_store.py has the proof).
        """
        async with self._reclaiming:
            if not (await anyio.to_thread.run_sync(self._reads.payload_stats)).reclaimable:
                return 0  # nothing to look for (and nothing ever, on PostgreSQL)
            await self._writes.write(Unit(ops=[Reclaim()]))
            if not (await anyio.to_thread.run_sync(self._reads.payload_stats)).dropped:
                return 1
            await self._writes.write(Unit(ops=[Reclaim(begin=True)]))
            unnamed, named = await anyio.to_thread.run_sync(self._reads.unreferenced_chunks)
            step = RECLAIM_CHUNKS
            parts = [
                Reclaim(chunks=tuple(unnamed[at : at + step]), named=tuple(named[at : at + step]))
                for at in range(0, max(len(unnamed), len(named)), step)
            ] or [Reclaim(chunks=())]
            parts[-1] = msgspec.structs.replace(parts[-1], last=True)
            for part in parts:
                await self._writes.write(Unit(ops=[part]))
            return 2 + len(parts)

    def _plan(self, address: str) -> tuple[list[storage.SnapshotInfo], int | None]:
        return list(self._reads.snapshots(address)), self._reads.lowest_seq(address)


class _Batches:
    """Operations gathered into units of at most ``batch`` rows to delete, each committed and awaited in turn."""

    def __init__(self, writes: Writes, batch: int, report: CompactReport) -> None:
        self._writes = writes
        self._batch = batch
        self._report = report
        self._ops: list[Op] = []
        self._rows = 0

    async def add(self, op: Op, rows: int) -> None:
        if self._ops and self._rows + rows > self._batch:
            await self.flush()
        self._ops.append(op)
        self._rows += rows

    async def flush(self) -> None:
        if self._ops:
            ops, self._ops, self._rows = self._ops, [], 0
            await self._writes.write(Unit(ops=ops))
            self._report.batches += 1
