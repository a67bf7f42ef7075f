"""Journals written by earlier versions must still open, decode, migrate and replay."""

from __future__ import annotations

import shutil
from pathlib import Path

import anyio
import apsw

from runtime import Registry, Runtime, VirtualClock, replay
from storage import SCHEMA_VERSION, Journal
from storage._schema import schema_version

from .golden_agents import Librarian, ResearchAgent
from .models import Account, GetBalance
from .routing import Asker, Wait, Waiter

GOLDEN = Path(__file__).parent / "golden"


async def test_the_version_1_journal_replays_and_serves(tmp_path: Path) -> None:
    copy = tmp_path / "v1.db"
    shutil.copy(GOLDEN / "v1.db", copy)
    classes = [Account, ResearchAgent, Librarian]
    with Journal.open(str(copy)) as journal:
        report = replay(journal, Registry(classes))
        assert report.ok, report.divergences
        assert report.steps >= 8
    async with Runtime(str(copy), actors=classes) as rt:  # migrates to the current schema
        assert await rt.ask("Account/golden", GetBalance()) == 5 + 7 + 11 + 13 + 17 + 19
    with Journal.open(str(copy)) as journal:
        assert journal.meta("step_hwm") is not None
    conn = apsw.Connection(str(copy))
    assert schema_version(conn) == SCHEMA_VERSION
    conn.close()


async def test_the_version_5_routing_journal_moves_its_markers_and_serves(tmp_path: Path) -> None:
    """Written by schema version 5 and left as a crash leaves it: the request of an
    actor's ask whose caller (``Asker/a|b``) holds a ``|``, a timer due in an hour,
    and a client's durable ask under the idempotency key ``timer:x``, all pending.
    Version 5 marked timers and replies in the client key column: it could not
    start on this file (the client key read as a timer), and it would have lost
    the reply to ``Asker/a|b``.
    """
    copy = str(tmp_path / "v5.db")
    shutil.copy(GOLDEN / "v5-routing.db", copy)
    clock = VirtualClock()  # the journal was written at this clock's start
    async with Runtime(copy, actors=[Asker, Waiter], clock=clock) as rt:
        await rt.resolve("Waiter/u", "p2", "two")
        with anyio.fail_after(10):
            assert await rt.ask("Waiter/u", Wait("p2"), idempotency_key="timer:x") == "two"
        await rt.resolve("Waiter/w", "p1", "one")
        clock.advance(3600)
        with anyio.fail_after(10):
            while _got(copy, "Asker/a|b") != ["one"] or _got(copy, "Waiter/v") != ["rang:an hour later"]:
                await anyio.sleep(0.01)
    with Journal.open(copy) as journal:
        assert journal.pending() == []
        assert replay(journal, Registry([Asker, Waiter])).ok


def _got(path: str, address: str) -> list[str]:
    with Journal.open(path) as journal:
        return [e.decoded()["value"] for e in journal.entries(address, kind="event")]
