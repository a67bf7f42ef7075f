"""A failed commit is indeterminate: the writer reads back before retrying or reporting."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from actors import CommitUnknownError, JournalOperationalError
from runtime import Runtime
from storage import Journal

from .faults import FaultVFS
from .models import Account, Deposit, GetBalance


@pytest.fixture
def fault() -> Iterator[FaultVFS]:
    vfs = FaultVFS()
    yield vfs
    vfs.close()


async def test_a_transient_fsync_failure_is_resolved_and_retried(db: str, fault: FaultVFS) -> None:
    async with Runtime(db, actors=[Account], vfs=fault.name) as rt:
        await rt.ask("Account/a", Deposit(1))
        fault.sync_failures = 1
        await rt.tell("Account/a", Deposit(2))  # its commit fails once, does not land, is retried
        assert fault.injected == 1
        assert await rt.ask("Account/a", GetBalance()) == 3
    with Journal.open(db) as journal:
        assert [e.type for e in journal.entries("Account/a", kind="event")] == ["Deposited", "Deposited"]


async def test_a_persistent_fsync_failure_is_reported_and_the_writer_recovers(db: str, fault: FaultVFS) -> None:
    async with Runtime(db, actors=[Account], vfs=fault.name) as rt:
        await rt.ask("Account/a", Deposit(1))
        fault.sync_failures = 100
        with pytest.raises(CommitUnknownError, match="may remain and come back"):
            await rt.tell("Account/a", Deposit(2))
        fault.sync_failures = 0
        await rt.tell("Account/a", Deposit(4))  # the disk is back: so is the runtime (and overwrites the frames)
        assert await rt.ask("Account/a", GetBalance()) == 5
    with Journal.open(db) as journal:
        amounts = [e.decoded()["amount"] for e in journal.entries("Account/a", kind="event")]
    assert amounts == [1, 4]


async def test_a_commit_that_cannot_be_read_back_is_reported_as_unknown(db: str, fault: FaultVFS) -> None:
    async with Runtime(db, actors=[Account], vfs=fault.name) as rt:
        await rt.ask("Account/a", Deposit(1))
        fault.sync_failures, fault.reads_fail_after_sync = 1, 1000
        with pytest.raises(CommitUnknownError, match="may or may not be in the journal"):
            await rt.tell("Account/a", Deposit(2))
        fault.read_failures = 0
        assert await rt.ask("Account/a", GetBalance()) in (1, 3)  # unknown: at most once


async def test_a_failure_reported_as_definite_never_comes_back_after_a_crash(db: str, fault: FaultVFS) -> None:
    # A failed fsync leaves the commit's frames in the WAL file, unindexed:
    # reading back cannot see them, yet WAL recovery after a crash brings them
    # back. Reporting that as "did not land" was wrong (found while building
    # the I/O-error sweep); only a later successful commit settles it.
    rt = Runtime(db, actors=[Account], vfs=fault.name)
    await rt.__aenter__()
    await rt.ask("Account/a", Deposit(1))
    fault.sync_failures = 100
    definite = True
    try:
        await rt.tell("Account/a", Deposit(2))
    except CommitUnknownError:
        definite = False
    except JournalOperationalError:
        pass
    await rt.abandon()  # the process stops before any other commit
    fault.sync_failures = 0
    async with Runtime(db, actors=[Account]) as rt:
        balance = await rt.ask("Account/a", GetBalance())
    assert balance == 1 if definite else balance in (1, 3)
