"""Retention and compaction: what is kept stays exact and forkable, what is not answers with a clear error."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from actors import Actor, ActorDefinitionError, OutsideRetentionError, Retention, apply, handler
from runtime import Registry, Runtime, VirtualClock, drill, load, replay
from runtime.interfaces.demo_agents import Librarian, ResearchAgent
from storage import Backend, DropHistory, Journal, SetFloor, Store, Unit

from .conftest import BACKENDS
from .models import Account, Deposit, GetBalance
from .s3server import S3Server
from .served import Server, cli, request
from .storage.conftest import Harness
from .test_golden import GOLDEN
from .test_replication import replicated, until


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each test that takes ``db`` runs on a file and on a PostgreSQL database."""
    return str(request.param)

class Note(msgspec.Struct):
    text: str


class Noted(msgspec.Struct):
    text: str


class Notebook(Actor):
    """Keeps the history from its second newest snapshot on."""

    class State(msgspec.Struct):
        notes: list[str] = msgspec.field(default_factory=list)

    state: State
    snapshot_every = 5
    retention = Retention(snapshots=2)

    @handler
    async def note(self, msg: Note) -> int:
        self.emit(Noted(msg.text))
        return len(self.state.notes)

    @apply
    def _noted(self, ev: Noted) -> None:
        self.state.notes.append(ev.text)


class Diary(Notebook):
    """Keeps an hour of history."""

    retention = Retention(age=3600)


def states(db: str, cls: type[Actor], address: str) -> dict[int, object]:
    """The state at every position of the actor's history, as `state --at` gives it."""
    registry = Registry([cls])
    desc, key = registry.resolve(address)
    with Journal.open(db) as journal:
        return {
            e.position: load(
                journal, desc, registry.codec, address, key, until_seq=journal.seq_at(address, e.position)
            ).instance.state
            for e in journal.entries(address)
        }


async def test_compaction_keeps_every_retained_position_exact_and_refuses_older_ones(db: str) -> None:
    async with Runtime(db, actors=[Notebook, Account]) as rt:
        for i in range(23):
            await rt.ask("Notebook/n", Note(f"note {i}"))
        for i in range(12):
            await rt.ask("Account/a", Deposit(i + 1))  # a type without retention: untouched
        before = states(db, Notebook, "Notebook/n")
        accounts = states(db, Account, "Account/a")
        with Journal.open(db) as journal:
            snapshots = [s.seq for s in journal.snapshots("Notebook/n")]
            assert snapshots == [15, 30, 45, 60]  # 3 entries a step, a snapshot every 5 events
        report = await rt.compact(batch=7)
        assert (report.actors, report.entries, report.snapshots) == (1, 44, 2)
        with Journal.open(db) as journal:
            info = journal.actor("Notebook/n")
            assert info is not None and info.floor == 45
            assert next(e.seq for e in journal.entries("Notebook/n")) == 45
            size = journal.history_size("Notebook/n")
            assert size is not None and (size.entries, size.snapshots) == (69 - 44, 2)
            earliest = next(iter(journal.entries("Notebook/n"))).position
        after = states(db, Notebook, "Notebook/n")
        assert after == {p: s for p, s in before.items() if p >= earliest}  # every retained position, exact
        assert states(db, Account, "Account/a") == accounts
        for position in (p for p in before if p < earliest):
            with Journal.open(db) as journal, pytest.raises(OutsideRetentionError) as refused:
                journal.seq_at("Notebook/n", position)
            assert refused.value.earliest == earliest and refused.value.status == 410
        # Forkable from every retained position; not from before.
        await rt.fork("Notebook/n", at=earliest, to="Notebook/f")
        assert list(states(db, Notebook, "Notebook/f").values()) == [before[earliest]]
        with pytest.raises(OutsideRetentionError):
            await rt.fork("Notebook/n", at=earliest - 1, to="Notebook/g")
        assert Journal.open(db).actor("Notebook/g") is None
        # The actor goes on from its kept history; a second compaction finds nothing more to do.
        assert await rt.ask("Notebook/n", Note("one more")) == 24
        again = await rt.compact()
        assert (again.entries, again.snapshots) == (0, 0)
    async with Runtime(db, actors=[Notebook, Account]) as rt:
        assert await rt.ask("Notebook/n", Note("after a restart")) == 25
    assert replay(Journal.open(db), Registry([Notebook, Account])).ok
    # The command line says the same.
    done = cli("state", "Notebook/n", "--at", str(earliest - 1), "--db", db, "--module", "tests.test_compaction",
               check=False)  # fmt: skip
    assert done.returncode == 2 and f"from journal position {earliest}" in done.stderr
    shown = json.loads(cli("state", "Notebook/n", "--at", str(earliest), "--db", db, "--module",
                           "tests.test_compaction", "--json").stdout)  # fmt: skip
    assert shown["state"] == msgspec.to_builtins(before[earliest])


async def test_retention_by_age_keeps_what_is_younger(db: str) -> None:
    clock = VirtualClock()
    async with Runtime(db, actors=[Diary], clock=clock) as rt:
        for day in range(3):
            for i in range(10):
                await rt.ask("Diary/d", Note(f"day {day} note {i}"))
                clock.advance(60)
            if day < 2:
                clock.advance(86400)
        before = states(db, Diary, "Diary/d")
        await rt.compact()
        with Journal.open(db) as journal:
            info = journal.actor("Diary/d")
            assert info is not None
            kept = list(journal.entries("Diary/d"))
        # Everything of the last hour (the last day's notes) is kept, from the snapshot before it.
        last_day = [e for e in kept if e.at >= clock() - 3600]
        assert len(last_day) == 30
        assert info.floor == 60 and kept[0].seq == 60  # the newest snapshot older than an hour
        assert states(db, Diary, "Diary/d") == {p: s for p, s in before.items() if p >= kept[0].position}


async def test_compaction_gives_the_space_back(db_file: str) -> None:
    # Values kept in their rows (payloads stored once: tests/test_compaction_payloads.py).
    async with Runtime(db_file, actors=[Notebook], payload_threshold=None) as rt:
        for _ in range(199):
            await rt.tell("Notebook/n", Note(os.urandom(500).hex()))
        await rt.ask("Notebook/n", Note("last"))
        report = await rt.compact()
    assert report.entries == 584  # up to the snapshot of step 195 (seq 585)
    assert report.bytes_before > 3_000_000  # mostly snapshots: each holds every note so far
    assert report.bytes_after < report.bytes_before / 4  # the pages went back to the file system
    assert os.path.getsize(db_file) < report.bytes_before / 4


async def test_other_actors_commit_while_a_compaction_runs(db: str) -> None:
    async with Runtime(db, actors=[Notebook, Account]) as rt:
        for i in range(300):
            await rt.tell("Notebook/n", Note(f"note {i}"))
        await rt.ask("Notebook/n", Note("last"))
        acknowledged = 0
        done = anyio.Event()

        async def compact() -> None:
            await rt.compact(batch=2)
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(compact)
            while not done.is_set():
                await rt.ask("Account/a", Deposit(1))
                acknowledged += 1
        # Hundreds of small deletes, each a commit of its own: the asks went through between them.
        assert acknowledged > 1
        assert await rt.ask("Account/a", Deposit(1)) == acknowledged + 1


def test_a_retention_needs_a_count_or_an_age_and_snapshots() -> None:
    with pytest.raises(ActorDefinitionError, match="needs snapshots=N"):
        Retention()
    with pytest.raises(ActorDefinitionError, match="at least 1"):
        Retention(snapshots=0)
    with pytest.raises(ActorDefinitionError, match="more than 0"):
        Retention(age=-5)
    with pytest.raises(ActorDefinitionError, match="seconds or a timedelta"):
        Retention(age="a week")  # type: ignore[arg-type]

    class NoSnapshots(Notebook):
        snapshot_every = 0

    with pytest.raises(ActorDefinitionError, match="snapshot_every=0"):
        Registry([NoSnapshots])


async def fill(db: str, notes: int) -> None:
    async with Runtime(db, actors=[Notebook, Account]) as rt:
        for i in range(notes):
            await rt.tell("Notebook/n", Note(f"note {i}"))
        await rt.ask("Notebook/n", Note("last"))
        await rt.ask("Account/a", Deposit(3))


def test_the_compact_command_and_the_sizes_actors_shows(db_file: str) -> None:
    anyio.run(fill, db_file, 22)
    listed = {a["address"]: a for a in json.loads(cli("actors", "--db", db_file, "--json").stdout)}
    assert (listed["Notebook/n"]["entries"], listed["Notebook/n"]["floor"]) == (69, 0)
    assert listed["Account/a"]["entries"] == 3 and listed["Account/a"]["bytes"] > 0
    report = json.loads(cli("compact", "--db", db_file, "--module", "tests.test_compaction", "--json").stdout)
    assert (report["actors"], report["entries"], report["snapshots"]) == (1, 44, 2)
    listed = {a["address"]: a for a in json.loads(cli("actors", "--db", db_file, "--json").stdout)}
    assert (listed["Notebook/n"]["entries"], listed["Notebook/n"]["floor"]) == (25, 45)
    assert listed["Account/a"]["entries"] == 3
    shown = cli("actors", "--db", db_file, env={**os.environ, "COLUMNS": "200"}).stdout
    assert "kept from" in shown and "Notebook/n" in shown
    done = cli("compact", "--db", db_file, "--module", "tests.test_compaction", "--batch", "0", check=False)
    assert done.returncode == 2 and "at least 1, not '0'" in done.stderr


def test_serve_compacts_on_a_schedule_and_shows_the_sizes_in_metrics(db_file: str) -> None:
    anyio.run(fill, db_file, 22)
    server = Server(db_file, "--no-replicate", "--compact-every", "1s", module="tests.test_compaction")
    try:
        metrics = ""
        for _ in range(600):  # bounded: the first compaction runs a second after the start
            status, metrics = request(server.url + "/metrics")
            assert status == 200
            if "stele_compaction_runs_total" in metrics:
                break
            time.sleep(0.05)
        assert 'stele_actor_journal_entries{actor="Notebook/n"} 25.0' in metrics
        assert 'stele_actor_journal_entries{actor="Account/a"} 3.0' in metrics
        assert request(server.url + "/actors/Notebook/n/note", {"text": "served"})[1] == 24
    finally:
        assert server.stop() == 0
    info = Journal.open(db_file).actor("Notebook/n")
    assert info is not None and info.floor == 45


async def test_a_drill_passes_over_a_compacted_journal(db_file: str, s3: S3Server) -> None:
    url = s3.url(s3.bucket())
    registry = Registry([Notebook, Account])
    async with Runtime(db_file, actors=[Notebook, Account], replicate=url) as rt:
        for i in range(40):
            await rt.tell("Notebook/n", Note(f"note {i}"))
        await rt.ask("Notebook/n", Note("last"))
        await until(lambda: replicated(rt), 15, "replicated")
        # The live journal compacted, the replica not yet (or just): both are compared where both keep history.
        report = await rt.compact()
        assert report.entries > 0
        first = await anyio.to_thread.run_sync(lambda: drill(db_file, url, registry, monitor=lambda: rt.replication))
        await rt.ask("Notebook/n", Note("after"))
        await until(lambda: replicated(rt), 15, "replicated")
        second = await anyio.to_thread.run_sync(lambda: drill(db_file, url, registry, monitor=lambda: rt.replication))
    assert first.ok, first.problems
    assert second.ok, second.problems
    assert second.actors == 1


class FloorMovesAfterTheSnapshotRead:
    """Reads of ``store``, where a compaction moves the floor just after the first snapshot is read
    (and that first read saw only the snapshots up to ``saw``)."""

    def __init__(self, harness: Harness, store: Backend, saw: int, floor: int) -> None:
        self._harness, self._store, self._saw, self._floor = harness, store, saw, floor
        self.moved = False

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    def snapshot_of(self, actor_id: int, address: str, before: int | None = None) -> object:
        if self.moved:
            return self._store.snapshot_of(actor_id, address, before)
        snap = self._store.snapshot_of(actor_id, address, min(before or self._saw + 1, self._saw + 1))
        assert snap is not None and snap.seq == self._saw
        self.moved = True
        ops = [SetFloor(address, self._floor), DropHistory(actor_id, 1, self._floor)]
        assert self._harness.one(Unit(ops=ops)) is None
        return snap


@pytest.mark.parametrize(("until_seq", "notes"), [(None, 23), (62, 21), (58, None)])
def test_a_state_read_while_compaction_moves_the_floor_is_read_again_or_refused(
    db_file: str, until_seq: int | None, notes: int | None
) -> None:
    anyio.run(fill, db_file, 22)  # Notebook/n: 23 steps of 3 entries, snapshots at seqs 15, 30, 45 and 60
    harness = Harness(
        "sqlite", lambda notify: Store.open(db_file, notify=notify), lambda: Journal.open(db_file), payloads=True
    )
    store = harness.open()
    registry = Registry([Notebook])
    desc, key = registry.resolve("Notebook/n")
    # The state's read found the snapshot at 45; then a compaction moved the floor to 60.
    reads: Any = FloorMovesAfterTheSnapshotRead(harness, store, saw=45, floor=60)
    try:
        if notes is None:  # below the new floor now: refused, never a state with a hole in its history
            with pytest.raises(OutsideRetentionError):
                load(reads, desc, registry.codec, "Notebook/n", key, until_seq=until_seq)
        else:  # read again, from the snapshot at the new floor
            state = load(reads, desc, registry.codec, "Notebook/n", key, until_seq=until_seq).instance.state
            assert state.notes == ([f"note {i}" for i in range(22)] + ["last"])[:notes]
        assert reads.moved
    finally:
        harness.close()


class KeptAccount(Account):
    """The golden journal's accounts, now with a retention."""

    name = "Account"
    snapshot_every = 2
    retention = Retention(snapshots=1)


async def test_a_journal_from_before_floors_is_compacted_and_keeps_its_free_pages(tmp_path: Path) -> None:
    copy = str(tmp_path / "v1.db")
    shutil.copy(GOLDEN / "v1.db", copy)
    async with Runtime(copy, actors=[KeptAccount, ResearchAgent, Librarian]) as rt:  # migrates
        for amount in range(1, 200):
            await rt.tell("Account/golden", Deposit(amount))
        balance = await rt.ask("Account/golden", GetBalance())
        before = states(copy, KeptAccount, "Account/golden")
        report = await rt.compact()
        assert report.entries > 500
        # auto_vacuum cannot be turned on without rewriting the file: the pages stay free for reuse.
        assert report.bytes_after == report.bytes_before and report.free_after > 0
        assert await rt.ask("Account/golden", GetBalance()) == balance
    with Journal.open(copy) as journal:
        assert not journal.space().reclaimable
        earliest = next(iter(journal.entries("Account/golden"))).position
    after = states(copy, KeptAccount, "Account/golden")
    assert {p: s for p, s in after.items() if p in before} == {p: s for p, s in before.items() if p >= earliest}
