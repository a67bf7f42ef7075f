"""A missing journal: restored only once it is owned, never mixed with what its
predecessor left beside it. SQLite deletes a WAL it finds beside an empty file
(the commits in it are lost without a word) and replays one beside a restored
file (measured: the result fails integrity_check); now both are set aside."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import anyio
import pytest

from actors import JournalOwnedError
from runtime import Runtime

from .conftest import dump
from .models import Account, Deposit, GetBalance
from .test_replication import replicated, until


def _aside(db: str, suffix: str) -> list[str]:
    directory, name = os.path.split(db)
    return sorted(os.path.join(directory, f) for f in os.listdir(directory) if f.startswith(f"{name}{suffix}.stale-"))


async def _crash_with_a_wal(db: str, deposits: int) -> bytes:
    """Write, checkpoint (a clean close), write more and crash: the WAL holds only the last part."""
    async with Runtime(db, actors=[Account]) as rt:
        for i in range(deposits):
            await rt.ask(f"Account/{i % 3}", Deposit(100))
    rt = await Runtime(db, actors=[Account]).__aenter__()
    for i in range(deposits):
        await rt.ask(f"Account/{i % 3}", Deposit(1))
    await rt.abandon()
    with open(db + "-wal", "rb") as f:
        wal = f.read()
    assert len(wal) > 32, "the crash left commits in the WAL"
    return wal


async def test_a_wal_left_beside_a_deleted_journal_is_set_aside_not_deleted(
    db: str, caplog: pytest.LogCaptureFixture
) -> None:
    wal = await _crash_with_a_wal(db, 20)
    os.remove(db)  # the journal goes; its WAL and shared-memory file stay
    caplog.set_level(logging.WARNING, logger="stele.storage")
    async with Runtime(db, actors=[Account]) as rt:
        assert [await rt.ask(f"Account/{k}", GetBalance()) for k in range(3)] == [0, 0, 0]  # a new journal
    (stale_wal,) = _aside(db, "-wal")
    (stale_shm,) = _aside(db, "-shm")
    with open(stale_wal, "rb") as f:
        assert f.read() == wal  # kept as it was, nothing deleted
    assert f"set {db}-wal aside as {stale_wal}" in caplog.text
    assert f"set {db}-shm aside as {stale_shm}" in caplog.text
    assert dump(db)["actors"] and len(dump(db)["journal"]) == 6  # three asks: message and reply


async def test_restore_if_missing_restores_the_replica_not_the_replica_plus_a_stale_wal(
    db: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    replica = str(tmp_path / "replica")
    async with Runtime(db, actors=[Account], replicate=replica) as rt:
        for i in range(30):
            await rt.tell(f"Account/{i % 3}", Deposit(1))
        await rt.ask("Account/0", GetBalance())
        await until(lambda: replicated(rt), 15, "replicated")
    expected = dump(db)
    # Then, without replication, the file moves on (checkpointed) and a crash leaves a WAL on that newer file.
    await _crash_with_a_wal(db, 15)
    os.remove(db)
    caplog.set_level(logging.WARNING, logger="stele.storage")
    async with Runtime(db, actors=[Account], replicate=replica, restore_if_missing=True) as rt:
        restored = dump(db)
        for table in ("journal", "inbox", "snapshots", "actors"):
            assert restored[table] == expected[table], table
        assert [await rt.ask(f"Account/{k}", GetBalance()) for k in range(3)] == [10, 10, 10]
    assert _aside(db, "-wal") and _aside(db, "-shm")
    assert f"set {db}-wal aside" in caplog.text
    assert not [f for f in os.listdir(tmp_path) if ".restoring-" in f], "no temporary file is left"


async def test_a_journal_is_restored_only_once_it_is_owned(db: str, tmp_path: Path) -> None:
    replica = str(tmp_path / "replica")
    async with Runtime(db, actors=[Account], replicate=replica) as owner:
        await owner.tell("Account/a", Deposit(1), durability="replicated")
        os.remove(db)  # under a running owner
        with anyio.fail_after(60), pytest.raises(JournalOwnedError, match=f"owned by pid {os.getpid()}"):
            async with Runtime(db, actors=[Account], replicate=replica, restore_if_missing=True):
                pass
        # Nothing was restored beside the live owner's file, not even into a temporary file.
        assert not os.path.exists(db)
        assert not [f for f in os.listdir(tmp_path) if ".restoring-" in f]
        assert await owner.ask("Account/a", GetBalance()) == 1
