"""ctx.ask: durable calls between actors; cycles refused; a crash resumes the wait."""

from __future__ import annotations

import anyio
import msgspec
import pytest

from actors import Actor, HandlerError, apply, handler
from runtime import Registry, Runtime, replay
from storage import Journal

from .conftest import BACKENDS
from .models import Account, Deposit, GetBalance


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every test here runs on a SQLite file and on a PostgreSQL database (``db`` makes either)."""
    return str(request.param)


class Transfer(msgspec.Struct):
    to: str
    amount: int


class Ping(msgspec.Struct):
    hops: list[str]


class Noted(msgspec.Struct):
    text: str


class Bank(Actor):
    class State(msgspec.Struct):
        log: list[str] = msgspec.field(default_factory=list)

    state: State

    @handler
    async def transfer(self, msg: Transfer) -> str:
        try:
            balance = await self.ctx.ask(msg.to, Deposit(msg.amount), timeout=10)
        except HandlerError as exc:
            self.emit(Noted(f"refused: {exc.message}"))
            return "refused"
        self.emit(Noted(f"{msg.to} now has {balance}"))
        return f"{msg.to}={balance}"

    @handler
    async def ping(self, msg: Ping) -> str:
        if msg.hops:
            return str(await self.ctx.ask(msg.hops[0], Ping(msg.hops[1:]), timeout=10))
        return "pong"

    @apply
    def _noted(self, ev: Noted) -> None:
        self.state.log.append(ev.text)


async def test_an_actor_asks_another_and_journals_the_reply(db: str) -> None:
    async with Runtime(db, actors=[Bank, Account]) as rt:
        assert await rt.ask("Bank/b", Transfer("Account/x", 5)) == "Account/x=5"
        assert await rt.ask("Bank/b", Transfer("Account/x", -1)) == "refused"
        assert await rt.ask("Account/x", GetBalance()) == 5
    with Journal.open(db) as journal:
        kinds = [(e.kind, e.type) for e in journal.entries("Bank/b")]
        assert kinds.count(("request", "Deposit")) == 2 and kinds.count(("effect", "ask:Account/x")) == 2
        assert replay(journal, Registry([Bank, Account])).ok
        assert journal.pending() == []


async def test_a_cycle_fails_at_once_naming_it(db: str) -> None:
    async with Runtime(db, actors=[Bank]) as rt:
        # Bank/a asks Bank/b, which asks Bank/a back: refused at once, not after a timeout.
        with anyio.fail_after(5), pytest.raises(HandlerError, match=r"ask cycle Bank/b -> Bank/a -> Bank/b"):
            await rt.ask("Bank/a", Ping(["Bank/b", "Bank/a"]))
        assert await rt.ask("Bank/a", Ping(["Bank/b", "Bank/c"])) == "pong"


class Slow(msgspec.Struct):
    pass


class Gate:
    open = anyio.Event()


class Waiter(Actor):
    @handler
    async def slow(self, msg: Slow) -> str:
        await self.ctx.effect(_wait)
        return "done"


async def _wait() -> None:
    await Gate.open.wait()


class Caller(Actor):
    @handler
    async def call(self, msg: Slow) -> str:
        return str(await self.ctx.ask("Waiter/w", Slow(), timeout=30))


@pytest.mark.parametrize("caller", ["Caller/c", "Caller/a|b"])  # a `|` once lost the pending reply at a restart
async def test_a_crash_while_waiting_resumes_the_wait_without_asking_again(db: str, caller: str) -> None:
    Gate.open = anyio.Event()
    rt = await Runtime(db, actors=[Caller, Waiter]).__aenter__()
    await rt.tell(caller, Slow())
    with anyio.fail_after(5):
        while caller not in dict(rt.statistics().waiting_asks):
            await anyio.sleep(0.005)
    await rt.abandon()
    Gate.open.set()
    async with Runtime(db, actors=[Caller, Waiter]):
        with anyio.fail_after(10):
            while True:
                with Journal.open(db) as journal:
                    if not journal.pending():
                        break
                await anyio.sleep(0.01)
    with Journal.open(db) as journal:
        entries = [(e.kind, e.type) for e in journal.entries(caller)]
        waiter_steps = [e for e in journal.entries("Waiter/w", kind="message")]
        replies = [e.decoded()["value"] for e in journal.entries(caller, kind="reply")]
    assert entries.count(("request", "Slow")) == 1  # asked once, across the crash
    assert len(waiter_steps) == 1 and replies == ["done"]
