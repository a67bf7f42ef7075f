"""Poison messages: a message that keeps crashing the process becomes a dead
letter after its attempts, and its actor carries on; dead letters can be
listed, retried and dropped."""

from __future__ import annotations

from pathlib import Path

import anyio
import apsw
import pytest

from actors import SteleError
from runtime import Runtime
from storage import Journal, _sqlite

from . import pgserver
from .conftest import BACKENDS
from .models import Account, Deposit
from .test_recovery import Gate, Work, Worker, wait_for


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every test here runs on a SQLite file and on a PostgreSQL database (``db`` makes either)."""
    return str(request.param)


async def crash_while_working(db: str, expected_calls: int) -> None:
    rt = await Runtime(db, actors=[Worker, Account], max_attempts=2).__aenter__()
    await wait_for(lambda: len(Gate.calls) >= expected_calls)
    await rt.abandon()


async def test_a_message_that_keeps_crashing_the_process_becomes_a_dead_letter(db: str) -> None:
    Gate.reset()
    rt = await Runtime(db, actors=[Worker, Account], max_attempts=2).__aenter__()
    await rt.tell("Worker/w", Work(1))  # the poison message: it hangs in its second effect
    await rt.tell("Worker/w", Work(2))
    await wait_for(lambda: len(Gate.calls) == 2)
    await rt.abandon()  # crash 1
    await crash_while_working(db, 3)  # attempt 1 after a restart, crash 2
    await crash_while_working(db, 4)  # attempt 2, crash 3
    Gate.open.set()
    async with Runtime(db, actors=[Worker, Account], max_attempts=2) as rt2:
        with anyio.fail_after(5):
            while not await rt2.dead_letters():
                await anyio.sleep(0.01)
        (letter,) = await rt2.dead_letters()
        assert letter.address == "Worker/w" and letter.type == "Work" and letter.attempts == 3
        assert "the process stopped during 2 attempts" in letter.reason
        # The actor carried on with its next message.
        assert await rt2.ask("Worker/w", Work(3), timeout=5) == [2, 3]
        await rt2.retry_dead_letter(letter.id)
        with anyio.fail_after(5):
            while True:
                with Journal.open(db) as journal:
                    if not journal.pending():
                        break
                await anyio.sleep(0.01)
        assert await rt2.dead_letters() == []
        with pytest.raises(SteleError, match="no dead letter 999"):
            await rt2.drop_dead_letter(999)
        assert await rt2.ask("Account/a", Deposit(1)) == 1
    with Journal.open(db) as journal:
        done = [e.decoded()["id"] for e in journal.entries("Worker/w", kind="event")]
    assert done == [2, 3, 1]


async def test_dead_letters_can_be_dropped(db: str) -> None:
    Gate.reset()
    rt = await Runtime(db, actors=[Worker], max_attempts=1).__aenter__()
    await rt.tell("Worker/w", Work(1))
    await wait_for(lambda: len(Gate.calls) == 2)
    await rt.abandon()  # the first run: nothing durable marks it, so it is not counted
    rt = await Runtime(db, actors=[Worker], max_attempts=1).__aenter__()
    await wait_for(lambda: len(Gate.calls) == 3)  # attempt 1, counted before it ran
    await rt.abandon()
    async with Runtime(db, actors=[Worker], max_attempts=1) as rt2:
        with anyio.fail_after(5):
            while not await rt2.dead_letters():
                await anyio.sleep(0.01)
        (letter,) = await rt2.dead_letters()
        await rt2.drop_dead_letter(letter.id)
        assert await rt2.dead_letters() == []
    with Journal.open(db) as journal:
        assert journal.pending() == []


async def test_journal_trouble_turns_no_message_into_a_dead_letter(
    db: str, backend: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    # Only a message's own failures count towards max_attempts (5 by default).
    # Here another process holds the journal's write lock for three seconds
    # (as a `sqlite3` shell in a transaction would): every commit fails
    # definitely, with SQLITE_BUSY after the busy timeout. Each failure used to
    # count: the head message became a dead letter within a second or two (and,
    # as writing the dead letter failed too, ran later, after the messages
    # behind it). On PostgreSQL the database is closed to connections for six
    # seconds and the runtime's sessions are ended: longer than the writer
    # waits to reconnect, so commits fail (unknown, then definitely) until it opens.
    monkeypatch.setattr(_sqlite, "BUSY_TIMEOUT_MS", 50)  # fail fast rather than after 5 s
    Gate.reset()
    async with Runtime(db, actors=[Worker]) as rt:
        for i in range(1, 11):
            await rt.tell("Worker/w", Work(i))
        await wait_for(lambda: len(Gate.calls) == 2)  # message 1 waits in its second effect
        if backend == "postgres":
            server: pgserver.Server = request.getfixturevalue("pg_server")
            with server.closed(db):
                Gate.open.set()  # its result cannot be journaled while the database is closed
                await anyio.sleep(6)
                assert rt.journal_failing is not None
        else:
            other = apsw.Connection(db)
            other.execute("BEGIN IMMEDIATE")
            try:
                Gate.open.set()  # its result cannot be journaled while the lock is held
                await anyio.sleep(3)
            finally:
                other.execute("ROLLBACK")
                other.close()
        with anyio.fail_after(30):
            while _pending(db):
                await anyio.sleep(0.05)
        assert await rt.dead_letters() == []
    with Journal.open(db) as journal:
        assert [e.decoded()["id"] for e in journal.entries("Worker/w", kind="event")] == list(range(1, 11))


def _pending(db: str) -> int:
    with Journal.open(db) as journal:
        return len(journal.pending())


async def test_a_dead_letter_that_cannot_be_written_yet_keeps_its_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The message past its attempts is buried first thing at a start, while another process holds
    # the journal's write lock: writing the dead letter fails (SQLITE_BUSY). The message must go
    # back to the head of its mailbox, be buried once the lock is gone, and only then may the
    # message behind it run (G4); nothing is lost.
    monkeypatch.setattr(_sqlite, "BUSY_TIMEOUT_MS", 50)
    db = str(tmp_path / "journal.db")
    Gate.reset()
    rt = await Runtime(db, actors=[Worker], max_attempts=1).__aenter__()
    await rt.tell("Worker/w", Work(1))  # the poison message: it hangs in its second effect
    await rt.tell("Worker/w", Work(2))
    await wait_for(lambda: len(Gate.calls) == 2)
    await rt.abandon()  # the first run: nothing durable marks it, so it is not counted
    await crash_while_working_once(db)  # attempt 1, counted before it ran
    Gate.open.set()
    other = apsw.Connection(db)
    other.execute("BEGIN IMMEDIATE")
    try:
        async with Runtime(db, actors=[Worker], max_attempts=1) as rt2:
            with anyio.fail_after(10):
                while "cannot write dead letter" not in caplog.text:
                    await anyio.sleep(0.01)
            other.execute("ROLLBACK")
            with anyio.fail_after(10):
                while _pending(db):
                    await anyio.sleep(0.01)
            (letter,) = await rt2.dead_letters()
    finally:
        if other.in_transaction:
            other.execute("ROLLBACK")
        other.close()
    assert letter.address == "Worker/w" and letter.type == "Work"
    with Journal.open(db) as journal:
        assert [e.decoded()["id"] for e in journal.entries("Worker/w", kind="event")] == [2]
        *_, behind = journal.entries("Worker/w", kind="message")  # (the poison's open step is first)
    assert letter.at <= behind.at  # buried before the message behind it ran


async def crash_while_working_once(db: str) -> None:
    rt = await Runtime(db, actors=[Worker], max_attempts=1).__aenter__()
    await wait_for(lambda: len(Gate.calls) >= 3)
    await rt.abandon()
