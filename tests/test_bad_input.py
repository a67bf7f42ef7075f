"""Bad input gets a clear error naming the problem, and leaves the journal untouched."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zlib

import apsw
import pytest

from actors import (
    JournalOwnedError,
    MessageValidationError,
    UndecodableEntryError,
    UnknownActorTypeError,
    UnknownHandlerError,
)
from runtime import Runtime
from storage import Journal

from .conftest import dump, outside
from .models import Account, Deposit, GetBalance, Record


async def seeded(db: str) -> dict[str, list[tuple[object, ...]]]:
    async with Runtime(db, actors=[Account]) as rt:
        for amount in (1, 2, 3):
            await rt.ask("Account/a", Deposit(amount))
    return dump(db)


@pytest.mark.parametrize(
    ("address", "msg", "error", "text"),
    [
        ("Nope/x", Deposit(1), UnknownActorTypeError, "no actor type 'Nope'.*known types: Account"),
        ("no-slash", Deposit(1), UnknownActorTypeError, "not an actor address"),
        ("Account/", Deposit(1), UnknownActorTypeError, "not an actor address"),
        ("Account/a", Record(1), UnknownHandlerError, "Account has no handler for Record; it takes:.*Deposit"),
        ("Account/a", {"amount": 1}, UnknownHandlerError, "must be msgspec.Struct instances"),
        ("Account/a", Deposit("ten"), MessageValidationError, r"invalid Deposit for Account/a.*\$\.amount"),  # type: ignore[arg-type]
    ],
)
async def test_a_bad_message_is_refused_and_nothing_is_written(
    db: str, address: str, msg: object, error: type[Exception], text: str
) -> None:
    before = await seeded(db)
    async with Runtime(db, actors=[Account]) as rt:
        with pytest.raises(error, match=text):
            await rt.tell(address, msg)  # type: ignore[arg-type]
        with pytest.raises(error, match=text):
            await rt.ask(address, msg)  # type: ignore[arg-type]
        assert await rt.ask("Account/a", GetBalance()) == 6
    after = dump(db)
    assert after["inbox"] == before["inbox"] == []
    # Only the GetBalance step was added.
    assert after["journal"][: len(before["journal"])] == before["journal"]
    assert [row[4] for row in after["journal"][len(before["journal"]) :]] == ["message", "reply"]


async def test_a_corrupt_event_payload_is_reported_with_its_position_and_type(db: str) -> None:
    await seeded(db)
    conn = outside(db)
    with conn:
        position = conn.execute("SELECT position FROM journal WHERE kind = 'event' AND seq > 5 LIMIT 1").get
        # Intact (its checksum matches) but undecodable: what old or buggy code could have written.
        garbage = b"\x92\xc1\xff"
        conn.execute(
            "UPDATE journal SET data = ?, crc = ? WHERE position = ?", (garbage, zlib.crc32(garbage), position)
        )
        conn.execute("DELETE FROM snapshots")  # so the corrupt event must be read
    conn.close()
    before = dump(db)
    async with Runtime(db, actors=[Account]) as rt:
        with pytest.raises(
            UndecodableEntryError, match=f"position {position} cannot be decoded as 'Deposited'"
        ) as info:
            await rt.ask("Account/a", GetBalance())
        assert info.value.position == position and info.value.type_name == "Deposited"
        # A tell to the broken actor is kept for later, other actors work.
        assert await rt.ask("Account/b", Deposit(2)) == 2
    after = dump(db)
    assert after["journal"][: len(before["journal"])] == before["journal"]
    with Journal.open(db) as journal:
        b = journal.actor("Account/b")
    assert b is not None
    assert {row[1] for row in after["journal"][len(before["journal"]) :]} == {b.id}


async def test_an_event_type_no_class_declares_is_reported(db: str) -> None:
    await seeded(db)
    conn = outside(db)
    with conn:
        conn.execute("UPDATE journal SET type = 'Vanished' WHERE kind = 'event'")
        conn.execute("DELETE FROM snapshots")
    conn.close()
    async with Runtime(db, actors=[Account]) as rt:
        with pytest.raises(UndecodableEntryError, match="type 'Vanished', which no registered actor class declares"):
            await rt.ask("Account/a", GetBalance())


async def test_a_second_owner_is_refused_with_the_owner_named(db: str) -> None:
    before = await seeded(db)
    async with Runtime(db, actors=[Account]) as rt:
        with pytest.raises(JournalOwnedError) as info:
            async with Runtime(db, actors=[Account]):
                pass
        assert info.value.pid == os.getpid()
        assert f"owned by pid {os.getpid()}" in str(info.value) and "since" in str(info.value)
        # Read-only inspection works while the owner runs.
        with Journal.open(db) as journal:
            assert journal.actor("Account/a") is not None
        assert await rt.ask("Account/a", GetBalance()) == 6
    assert dump(db)["journal"][: len(before["journal"])] == before["journal"]


async def test_a_dead_owner_is_taken_over(db: str) -> None:
    await seeded(db)
    child = textwrap.dedent(
        f"""
        import anyio, sys, time
        sys.path.insert(0, {os.getcwd()!r})
        from runtime import Runtime
        from tests.models import Account
        async def main():
            async with Runtime({db!r}, actors=[Account]):
                print("owned", flush=True)
                await anyio.sleep(60)
        anyio.run(main)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "owned"
        with pytest.raises(JournalOwnedError, match=f"pid {proc.pid}"):
            async with Runtime(db, actors=[Account]):
                pass
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    async with Runtime(db, actors=[Account]) as rt:
        assert await rt.ask("Account/a", GetBalance()) == 6


def test_a_file_that_is_not_a_journal_is_refused(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "other.db")
    conn = apsw.Connection(path)  # made here: another program's database
    conn.execute("CREATE TABLE users(id)")
    conn.close()
    from storage import SchemaError, Store

    with pytest.raises(SchemaError, match="not a Stele journal"):
        Store.open(path, notify=lambda results: None)
    with pytest.raises(SchemaError, match="not a Stele journal"):
        Journal.open(path)
