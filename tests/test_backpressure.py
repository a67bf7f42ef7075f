"""Backpressure: beyond the bounds, tell and ask fail fast and write nothing."""

from __future__ import annotations

import anyio
import pytest

from actors import BackpressureError
from runtime import Runtime
from storage import Journal

from .conftest import BACKENDS, dump
from .models import Account, Deposit
from .test_recovery import Gate, Work, Worker, wait_for


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every test here runs on a SQLite file and on a PostgreSQL database (``db`` makes either)."""
    return str(request.param)


async def test_a_full_mailbox_refuses_at_once_and_recovers(db: str) -> None:
    Gate.reset()
    async with Runtime(db, actors=[Worker, Account], max_mailbox=3, max_pending=5) as rt:
        await rt.tell("Worker/w", Work(1))  # runs, and blocks in its second effect
        await wait_for(lambda: len(Gate.calls) == 2)
        for i in range(2, 5):
            await rt.tell("Worker/w", Work(i))  # three waiting: the mailbox is full
        before = dump(db)
        with pytest.raises(BackpressureError, match=r"Worker/w has 3 messages waiting \(max_mailbox=3\)"):
            await rt.tell("Worker/w", Work(5))
        with pytest.raises(BackpressureError, match="max_mailbox=3"):
            await rt.ask("Worker/w", Work(5))
        assert dump(db)["inbox"] == before["inbox"]  # nothing written
        # Other actors still have room (5 in all). Another Worker, so that it stays
        # pending at the gate: an Account's step could commit with its tell, and
        # leave room for the next one (failed about one run in twenty).
        await rt.tell("Worker/x", Work(6))
        with pytest.raises(BackpressureError, match=r"5 messages are waiting in all \(max_pending=5\)"):
            await rt.tell("Account/b", Deposit(1))
        Gate.open.set()
        await wait_for(lambda: rt.statistics().pending == 0)  # drained: room again
        with anyio.fail_after(10):
            assert await rt.ask("Worker/w", Work(5)) == [1, 2, 3, 4, 5]
        assert await rt.ask("Account/b", Deposit(1)) == 1
        assert rt.statistics().pending == 0
    with Journal.open(db) as journal:
        assert len(list(journal.entries("Worker/w", kind="event"))) == 5
        assert journal.pending() == []
