"""The storage contract for retention: an actor's floor, dropping the history below it, giving space back.

Runs against every backend of ``conftest.harness``, without a runtime.
"""

from __future__ import annotations

import random

import pytest

from errors import OutsideRetentionError
from storage import ActorRow, DropHistory, EntryKind, Reads, ReclaimSpace, SetFloor, Unit, snapshot_row

from .conftest import Harness
from .test_contract import AT, entry, step


def seqs(reads: Reads, address: str, from_seq: int = 0) -> list[int]:
    return [e.seq for e in reads.entries(address, from_seq)]


def four_steps(harness: Harness) -> list[int]:
    """Actor 1 with four steps (seqs 1-12), snapshots at seqs 3 and 6; the positions of its entries."""
    harness.commit([step(1, 1, 1, register=True, consume=False)])
    harness.commit([step(1, 4, 2, consume=False)])
    harness.commit([step(1, 7, 3, consume=False)])
    harness.commit([step(1, 10, 4, consume=False)])
    harness.commit([Unit(snapshots=[snapshot_row(1, 3, "S", b"\x01", AT), snapshot_row(1, 6, "S", b"\x02", AT)])])
    backend = harness.backend
    assert backend is not None
    return [e.position for e in backend.entries("A/1")]


def test_a_floor_hides_the_history_below_it_from_every_read(harness: Harness) -> None:
    backend = harness.open()
    positions = four_steps(harness)
    assert harness.one(Unit(ops=[SetFloor("A/1", 5)])) is None  # no snapshot at seq 5: nothing changes
    info = backend.actor("A/1")
    assert info is not None and info.floor == 0
    assert harness.one(Unit(ops=[SetFloor("A/1", 6)])) is None
    with harness.reading() as outside:
        for reads in (backend, outside):
            info = reads.actor("A/1")
            assert info is not None and (info.floor, info.last_seq) == (6, 12)
            assert [a.floor for a in reads.actors()] == [6]
            assert seqs(reads, "A/1") == list(range(6, 13))
            assert seqs(reads, "A/1", from_seq=8) == list(range(8, 13))
            assert [e.seq for e in reads.entries("A/1", kind=EntryKind.EVENT)] == [8, 11]
            assert [s.seq for s in reads.snapshots("A/1")] == [6]
            assert reads.snapshot("A/1", before=6) is None  # the snapshot at 3 lies below the floor
            snap = reads.snapshot("A/1")
            assert snap is not None and snap.seq == 6
            assert [row[1] for row in reads.event_rows(info.id, 6)] == [8, 11]
            with pytest.raises(OutsideRetentionError) as below:
                # A state read from below the floor cannot be completed: the events between are gone.
                reads.event_rows(info.id, 3)
            assert below.value.floor == 6 and below.value.earliest == positions[5]
            size = reads.history_size("A/1")
            assert size is not None and (size.entries, size.snapshots, size.floor) == (12, 2, 6)
            assert reads.history_size("A/none") is None
            assert reads.seq_at("A/1", positions[5]) == 6  # the entry at the floor: its state is kept
            assert reads.seq_at("A/1", positions[9]) == 10
            with pytest.raises(OutsideRetentionError) as raised:
                reads.seq_at("A/1", positions[4])
            assert raised.value.earliest == positions[5] and raised.value.floor == 6
            assert raised.value.status == 410 and raised.value.code == "outside_retention"
            assert f"position {positions[4]}" in str(raised.value) and "A/1" in str(raised.value)
    assert harness.one(Unit(ops=[SetFloor("A/1", 3)])) is None  # a floor never moves down
    info = backend.actor("A/1")
    assert info is not None and info.floor == 6


def test_dropping_history_removes_only_what_lies_below_the_floor(harness: Harness) -> None:
    backend = harness.open()
    four_steps(harness)
    info = backend.actor("A/1")
    assert info is not None
    # Before any floor, dropping removes nothing at all.
    assert harness.one(Unit(ops=[DropHistory(info.id, 1, 100)])) is None
    assert {s.address: s.entries for s in backend.history_sizes()} == {"A/1": 12}
    harness.commit([Unit(ops=[SetFloor("A/1", 6)])])
    assert backend.lowest_seq("A/1") == 1  # still stored below the floor: compaction drops it from here
    assert harness.one(Unit(ops=[DropHistory(info.id, 1, 3)])) is None  # a bounded batch: seqs 1 and 2
    assert backend.lowest_seq("A/1") == 3
    (size,) = backend.history_sizes()
    assert (size.address, size.entries, size.snapshots, size.floor) == ("A/1", 10, 2, 6)
    assert harness.one(Unit(ops=[DropHistory(info.id, 3, 100)])) is None  # asks for more than lies below
    (size,) = backend.history_sizes()
    assert (size.entries, size.snapshots) == (7, 1)  # seqs 6-12 and the snapshot at the floor
    assert size.bytes == 7 and size.snapshot_bytes == 1  # one byte of payload each
    assert seqs(backend, "A/1") == list(range(6, 13))
    assert backend.lowest_seq("A/1") == 6 and backend.lowest_seq("A/none") is None
    with harness.reading() as outside:
        assert outside.history_sizes() == backend.history_sizes()
    # What comes after the floor is written and read as before, and survives a restart.
    harness.commit([step(1, 13, 5, consume=False)])
    backend = harness.reopen()
    info = backend.actor("A/1")
    assert info is not None and (info.floor, info.last_seq) == (6, 15)
    assert seqs(backend, "A/1") == list(range(6, 16))


def test_a_floor_a_new_actor_begins_with_is_set_in_the_unit_that_registers_it(harness: Harness) -> None:
    # A fork begins with its provenance entry and a snapshot at seq 1, its floor.
    backend = harness.open()
    unit = Unit(
        journal=[entry(7, 1, 0, EntryKind.FORK)],
        snapshots=[snapshot_row(7, 1, "S", b"\x03", AT)],
        register=ActorRow(7, "A/fork", "A", AT),
        ops=[SetFloor("A/fork", 1)],
    )
    assert harness.one(unit) is None
    info = backend.actor("A/fork")
    assert info is not None and (info.floor, info.last_seq) == (1, 1)
    (first,) = list(backend.entries("A/fork"))
    assert first.kind == EntryKind.FORK
    assert backend.seq_at("A/fork", first.position) == 1
    with pytest.raises(OutsideRetentionError):
        backend.seq_at("A/fork", first.position - 1)
    assert backend.open_step(info.id, "A/fork") == []  # a fork's first entry closes no open step


def test_free_space_is_counted_and_given_back_in_bounded_steps(paged: Harness) -> None:
    harness = paged
    backend = harness.open()
    # Distinct values, each stored in its row as it is: under the payload threshold (a larger one would be
    # stored once, in chunks), and random (a server would compress zeros to nothing).
    rng = random.Random(7)
    history = [entry(1, s, s, data=rng.randbytes(1000)) for s in range(1, 1201)]
    snapshot = snapshot_row(1, 1190, "S", b"\x01", AT)
    harness.commit([Unit(journal=history, snapshots=[snapshot], register=ActorRow(1, "A/1", "A", AT))])
    harness.commit([Unit(ops=[SetFloor("A/1", 1190)])])
    before = backend.space()
    assert before.free_bytes == 0 and before.bytes > 1200 * 1000
    harness.commit([Unit(ops=[DropHistory(1, 1, 1190)])])
    assert seqs(backend, "A/1") == list(range(1190, 1201))
    freed = backend.space()
    assert freed.reclaimable
    assert freed.bytes == before.bytes and freed.free_bytes > 900 * 1000  # freed for reuse, not given back
    steps = 0
    while backend.space().free_bytes and steps < 1000:
        assert harness.one(Unit(ops=[ReclaimSpace(50)])) is None
        steps += 1
    after = backend.space()
    assert after.free_bytes == 0 and after.bytes <= before.bytes - 900 * 1000
    assert steps > 1  # bounded steps, not one long rewrite
    assert seqs(backend, "A/1") == list(range(1190, 1201))


def test_storage_without_pages_to_give_back_says_so_and_accepts_reclaim_space(harness: Harness) -> None:
    backend = harness.open()
    rng = random.Random(7)
    history = [entry(1, s, s, data=rng.randbytes(1000)) for s in range(1, 301)]
    snapshot = snapshot_row(1, 290, "S", b"\x01", AT)
    harness.commit([Unit(journal=history, snapshots=[snapshot], register=ActorRow(1, "A/1", "A", AT))])
    before = backend.space()
    assert before.bytes > 300 * 1000
    harness.commit([Unit(ops=[SetFloor("A/1", 290), DropHistory(1, 1, 290)])])
    assert harness.one(Unit(ops=[ReclaimSpace(50)])) is None  # accepted everywhere (nothing to do on a server)
    assert seqs(backend, "A/1") == list(range(290, 301))
    after = backend.space()
    assert after.reclaimable == (after.page_size > 0)  # pages to give back, or none at all
    assert after.bytes <= before.bytes
