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
        with pytest.raises(JournalOperationalError, match="did not land"):
            await rt.tell("Account/a", Deposit(2))
        fault.sync_failures = 0
        await rt.tell("Account/a", Deposit(4))  # the disk is back: so is the runtime
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
