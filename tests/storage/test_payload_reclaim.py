"""Compaction and stored payloads, without a runtime: the chunks only removed history named are reclaimed.

Dropping history (:class:`~storage.DropHistory`) demotes the chunks of the rows
it deletes in the same transaction; a reclaim then deletes those no remaining
row names: a chunk shared with a kept entry or snapshot stays, a crash between
the drop and the reclaim leaves nothing dangling, and a row written while a
staged reclaim runs keeps what it names. SQLite only (PostgreSQL keeps every
value in its row; its compaction is covered by test_retention.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import msgspec

from storage import Backend, DropHistory, EntryKind, Reclaim, SetFloor, Unit, entry_row, snapshot_row

from ..chunks import ChunkGraph, chunk_graph
from .conftest import Harness
from .test_payloads import AT, STORING, inbox, text, turn

encode = msgspec.msgpack.encode


def journal_path(tmp_path: Path) -> str:
    return str(tmp_path / "journal.db")  # where conftest's SQLite harnesses keep it


def history(harness: Harness, dropped: str, shared: str, kept: str) -> None:
    """Actor 1: a turn answering ``dropped`` then one answering ``shared`` (seqs 1-8), a snapshot at 8
    holding ``kept``, then a turn answering ``shared`` again (seqs 9-12)."""
    assert harness.one(turn(1, 1, 1, dropped, register=True)) is None
    assert harness.one(turn(1, 5, 2, shared)) is None
    state = encode({"last": kept})
    assert harness.one(Unit(snapshots=[snapshot_row(1, 4, "S", encode({"last": dropped}), AT)])) is None
    assert harness.one(Unit(snapshots=[snapshot_row(1, 8, "S", state, AT)])) is None
    assert harness.one(turn(1, 9, 3, shared)) is None


class Written(NamedTuple):
    backend: Backend
    dropped: str
    shared: str
    kept: str
    below: set[int]
    above: set[int]


def written(harness: Harness, tmp_path: Path, seed: int) -> Written:
    """A backend opened, :func:`history` written with three texts from ``seed`` on, and the chunks
    its rows below seq 8 and from seq 8 on name."""
    backend = harness.open()
    dropped, shared, kept = text(3000, seed=seed), text(3000, seed=seed + 1), text(3000, seed=seed + 2)
    history(harness, dropped, shared, kept)
    below, above = dropped_and_kept(chunk_graph(journal_path(tmp_path)))
    return Written(backend, dropped, shared, kept, below, above)


def dropped_and_kept(graph: ChunkGraph) -> tuple[set[int], set[int]]:
    """The chunks of actor 1's rows below seq 8, and of those from seq 8 on."""
    below: set[int] = set()
    above: set[int] = set()
    for (table, key), ids in graph.rows.items():
        assert table in ("journal", "snapshots")
        (below if int(key.split("/")[1]) < 8 else above).update(ids)
    return below, above


def drop(harness: Harness) -> None:
    assert harness.one(Unit(ops=[SetFloor("A/1", 8)])) is None
    assert harness.one(Unit(ops=[DropHistory(1, 1, 8)])) is None


def staged(harness: Harness, backend: Backend) -> None:
    """A reclaim as the runtime runs it: begin, the reader's look, the deletes."""
    assert harness.one(Unit(ops=[Reclaim(begin=True)])) is None
    unnamed, named = backend.unreferenced_chunks()
    assert harness.one(Unit(ops=[Reclaim(chunks=tuple(unnamed), named=tuple(named), last=True)])) is None


def reads_back(backend: Backend, shared: str, kept: str) -> None:
    events = [e.decoded()["text"] for e in backend.entries("A/1", kind=EntryKind.EVENT)]
    assert events == [shared]
    snap = backend.snapshot("A/1")
    assert snap is not None and snap.intact and msgspec.msgpack.decode(snap.data) == {"last": kept}
    assert list(backend.payload_problems()) == []


@STORING
def test_the_chunks_only_dropped_history_named_are_reclaimed_and_shared_ones_stay(
    harness: Harness, tmp_path: Path
) -> None:
    backend, _, shared, kept, below, above = written(harness, tmp_path, seed=1)
    assert below - above and below & above  # some chunks only the dropped rows name, some shared
    drop(harness)
    stats = backend.payload_stats()
    assert stats.reclaimable == stats.dropped == len(below)  # demoted with the delete, in its transaction
    assert harness.one(Unit(ops=[Reclaim()])) is None  # the transient tables' reclaim: not these
    assert chunk_graph(journal_path(tmp_path)).stored == below | above
    staged(harness, backend)
    graph = chunk_graph(journal_path(tmp_path))
    assert graph.stored == graph.referenced == above  # the dropped-only ones gone, nothing dangling
    assert backend.payload_stats().reclaimable == backend.payload_stats().dropped == 0  # the shared ones kept again
    reads_back(backend, shared, kept)


@STORING
def test_a_crash_between_the_drop_and_the_reclaim_leaves_nothing_dangling(harness: Harness, tmp_path: Path) -> None:
    backend, _, shared, kept, below, above = written(harness, tmp_path, seed=4)
    drop(harness)
    backend.abandon()  # the process dies: nothing reclaimed yet
    backend = harness.open()
    graph = chunk_graph(journal_path(tmp_path))
    assert graph.missing == set() and graph.unreferenced == below - above  # left for later, not lost
    reads_back(backend, shared, kept)
    assert harness.one(Unit(ops=[Reclaim(begin=True)])) is None
    unnamed, _ = backend.unreferenced_chunks()
    backend.abandon()  # and again in the middle of a staged reclaim: nothing deleted
    backend = harness.open()
    assert chunk_graph(journal_path(tmp_path)).stored == graph.stored
    assert harness.one(Unit(ops=[Reclaim(chunks=tuple(unnamed), last=True)])) is None  # no begin since: proves nothing
    assert chunk_graph(journal_path(tmp_path)).stored == graph.stored
    staged(harness, backend)
    graph = chunk_graph(journal_path(tmp_path))
    assert graph.stored == graph.referenced == above
    reads_back(backend, shared, kept)


@STORING
def test_history_written_while_a_staged_reclaim_runs_keeps_the_chunks_it_names(
    harness: Harness, tmp_path: Path
) -> None:
    backend, dropped, shared, _, below, above = written(harness, tmp_path, seed=7)
    drop(harness)
    assert harness.one(Unit(ops=[Reclaim(begin=True)])) is None
    unnamed, named = backend.unreferenced_chunks()
    assert set(unnamed) == below - above and set(named) == below & above
    # After the reader looked: an entry naming a dropped answer again, then dropped history
    # demoting it once more (an entry of actor 2, the same answer, removed by its compaction).
    assert harness.one(turn(1, 13, 4, dropped)) is None
    assert harness.one(turn(2, 1, 5, dropped, register=True)) is None
    assert harness.one(Unit(snapshots=[snapshot_row(2, 4, "S", b"\x80", AT)])) is None
    assert harness.one(Unit(ops=[SetFloor("A/2", 4)])) is None
    assert harness.one(Unit(ops=[DropHistory(2, 1, 4)])) is None
    assert harness.one(Unit(ops=[Reclaim(chunks=tuple(unnamed), named=tuple(named), last=True)])) is None
    graph = chunk_graph(journal_path(tmp_path))
    assert graph.missing == set()
    assert [e.decoded()["text"] for e in backend.entries("A/1", kind=EntryKind.EVENT)] == [shared, dropped]
    staged(harness, backend)  # a later reclaim proves what it can: everything stored is named
    graph = chunk_graph(journal_path(tmp_path))
    assert graph.stored == graph.referenced and graph.missing == set()


@STORING
def test_a_chunk_a_transient_row_names_survives_the_drop_of_the_history_that_shared_it(
    harness: Harness, tmp_path: Path
) -> None:
    backend, dropped, _, _, _, _ = written(harness, tmp_path, seed=10)
    waiting = encode({"handler": "h", "body": {"text": dropped}})
    pending = Unit(journal=[entry_row(1, 13, 4, EntryKind.EVENT, "E", b"\x01", AT)], top=9)
    assert harness.one(pending) is None
    assert harness.one(Unit(inbox=[inbox(9, waiting)], top=9)) is None
    drop(harness)
    staged(harness, backend)
    graph = chunk_graph(journal_path(tmp_path))
    assert graph.missing == set() and graph.unreferenced == set()
    assert [p.payload for p in backend.pending()] == [waiting]
