"""The programming model: handlers, replies, errors, appliers, addressing."""

from __future__ import annotations

import msgspec
import pytest

from actors import Actor, ActorDefinitionError, HandlerError, apply, handler
from runtime import Runtime
from storage import Journal

from .conftest import BACKENDS
from .models import Account, Deposit, GetBalance, Withdraw


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every test here runs on a SQLite file and on a PostgreSQL database (``db`` makes either)."""
    return str(request.param)


async def test_ask_returns_the_reply_and_state_persists(db: str) -> None:
    async with Runtime(db, actors=[Account]) as rt:
        assert await rt.ask("Account/alice", Deposit(5)) == 5
        assert await rt.ask("Account/alice", Deposit(7)) == 12
        assert await rt.ask("Account/bob", GetBalance()) == 0
    async with Runtime(db, actors=[Account]) as rt:
        assert await rt.ask("Account/alice", GetBalance()) == 12


async def test_a_raising_handler_replies_with_the_error_and_keeps_no_events(db: str) -> None:
    async with Runtime(db, actors=[Account]) as rt:
        await rt.ask("Account/a", Deposit(3))
        with pytest.raises(HandlerError) as info:
            await rt.ask("Account/a", Withdraw(10))  # emits, then raises
        assert info.value.type_name == "ValueError"
        assert "insufficient funds" in str(info.value)
        # The emitted-then-abandoned event is gone from memory too.
        assert await rt.ask("Account/a", GetBalance()) == 3
    with Journal.open(db) as journal:
        kinds = [(e.kind, e.type) for e in journal.entries("Account/a")]
    assert ("event", "Withdrawn") not in kinds
    assert kinds.count(("reply", "error")) == 1


async def test_tell_is_processed(db: str) -> None:
    async with Runtime(db, actors=[Account]) as rt:
        for amount in range(1, 11):
            await rt.tell("Account/t", Deposit(amount))
        assert await rt.ask("Account/t", GetBalance()) == 55


class Ping(msgspec.Struct):
    n: int


class Pinged(msgspec.Struct):
    n: int


class Base(Actor):
    class State(msgspec.Struct):
        total: int = 0

    state: State

    @handler
    async def ping(self, msg: Ping) -> int:
        self.emit(Pinged(msg.n))
        return self.state.total

    @apply
    def _pinged(self, ev: Pinged) -> None:
        self.state.total += ev.n


class Child(Base):
    """Inherits the handler and the applier; has its own type name."""

    name = "Kid"


async def test_handlers_and_appliers_are_inherited_and_name_overrides_the_type(db: str) -> None:
    async with Runtime(db, actors=[Base, Child]) as rt:
        assert await rt.ask("Kid/1", Ping(2)) == 2
        assert await rt.ask("Base/1", Ping(5)) == 5
    with Journal.open(db) as journal:
        assert [a.type for a in journal.actors()] == ["Base", "Kid"]


def test_two_handlers_for_one_message_type_are_refused(db: str) -> None:
    class Twice(Actor):
        @handler
        async def one(self, msg: Ping) -> None: ...

        @handler
        async def two(self, msg: Ping) -> None: ...

    with pytest.raises(ActorDefinitionError, match="both take Ping"):
        Runtime(db, actors=[Twice])


def test_handlers_must_be_async() -> None:
    with pytest.raises(TypeError, match="must be an async method"):

        class Bad(Actor):
            @handler
            def sync(self, msg: Ping) -> None: ...


def test_a_state_field_without_default_is_refused(db: str) -> None:
    class NoDefault(Actor):
        class State(msgspec.Struct):
            x: int

    with pytest.raises(ActorDefinitionError, match="every field needs a default"):
        Runtime(db, actors=[NoDefault])


class Roll(msgspec.Struct):
    pass


class Dice(Actor):
    @handler
    async def roll(self, msg: Roll) -> list[str]:
        return [repr(self.ctx.now()), repr(self.ctx.random()), str(self.ctx.uuid()), self.ctx.idempotency_key]


async def test_ctx_values_are_journaled_with_the_step(db: str) -> None:
    async with Runtime(db, actors=[Dice]) as rt:
        first = await rt.ask("Dice/d", Roll())
        second = await rt.ask("Dice/d", Roll())
    assert first != second
    assert first[3].startswith("Dice/d/") and first[3].endswith("/0")
    with Journal.open(db) as journal:
        messages = [e.decoded() for e in journal.entries("Dice/d") if e.kind == "message"]
    assert repr(messages[0]["now"]) == first[0]
