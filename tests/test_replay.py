"""G6, the whole journal: re-running handlers reproduces events, sends and replies."""

from __future__ import annotations

import msgspec
import pytest

from actors import Actor, SteleError, apply, handler
from runtime import Registry, Runtime, replay
from storage import Journal

from .conftest import BACKENDS
from .models import Account, Deposit, Deposited, GetBalance, Withdraw


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every test here runs on a SQLite file and on a PostgreSQL database (``db`` makes either)."""
    return str(request.param)


class Note(msgspec.Struct):
    text: str


class Noted(msgspec.Struct):
    text: str
    id: str


def lookup(text: str) -> str:
    return text.upper()


class Notebook(Actor):
    class State(msgspec.Struct):
        notes: list[str] = msgspec.field(default_factory=list)

    state: State

    @handler
    async def note(self, msg: Note) -> int:
        found = await self.ctx.effect(lookup, msg.text)
        self.emit(Noted(found, str(self.ctx.uuid())))
        await self.ctx.tell("Account/log", Deposit(len(found)))
        return len(self.state.notes)

    @apply
    def _noted(self, ev: Noted) -> None:
        self.state.notes.append(ev.text)


class ChangedAccount(Account):
    """Deposits twice the amount: a deliberately changed handler."""

    name = "Account"

    @handler
    async def deposit(self, msg: Deposit) -> int:
        self.emit(Deposited(msg.amount * 2))
        return self.state.balance


class ChangedNotebook(Notebook):
    name = "Notebook"

    @handler
    async def note(self, msg: Note) -> int:
        found = await self.ctx.effect(lookup, msg.text)
        self.emit(Noted(found, "fixed-id"))  # no longer from ctx.uuid()
        return len(self.state.notes)


async def record(db: str) -> None:
    async with Runtime(db, actors=[Account, Notebook]) as rt:
        for amount in (5, 7, 11):
            await rt.ask("Account/a", Deposit(amount))
        await rt.tell("Account/a", Withdraw(100))  # fails: an error reply, nothing kept
        await rt.ask("Account/a", GetBalance())
        await rt.ask("Notebook/n", Note("hello"))
        await rt.ask("Notebook/n", Note("world"))
        await rt.ask("Account/log", GetBalance())


async def test_unchanged_code_replays_the_whole_journal_exactly(db: str) -> None:
    await record(db)
    with Journal.open(db) as journal:
        report = replay(journal, Registry([Account, Notebook]))
    assert report.ok, report.divergences
    assert report.actors == 3 and report.steps == 10 and report.skipped == 0


async def test_a_changed_event_is_caught_with_its_position(db: str) -> None:
    await record(db)
    with Journal.open(db) as journal:
        report = replay(journal, Registry([ChangedAccount, Notebook]), actor="Account/a")
        first_event = next(journal.entries("Account/a", kind="event"))
    assert not report.ok
    (divergence,) = report.divergences
    assert divergence.position == first_event.position
    assert "Deposited {'amount': 5}" in divergence.recorded and "Deposited {'amount': 10}" in divergence.current


async def test_missing_sends_and_changed_values_are_caught(db: str) -> None:
    await record(db)
    with Journal.open(db) as journal:
        report = replay(journal, Registry([Account, ChangedNotebook]), actor="Notebook/n")
    (divergence,) = report.divergences
    assert "fixed-id" in divergence.current


class Unrelated(Actor):
    pass


async def test_replay_without_the_actor_classes_says_which_is_missing(db: str) -> None:
    await record(db)
    with Journal.open(db) as journal, pytest.raises(SteleError, match="no actor class of type 'Account'"):
        replay(journal, Registry([Unrelated]))
