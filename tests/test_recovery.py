"""G1-G4 across crashes simulated in-process (``Runtime.abandon`` drops what is
queued and lets go of the file, as a killed process would; the kill -9 test
does it for real)."""

from __future__ import annotations

import anyio
import msgspec
import pytest

from actors import Actor, apply, handler
from runtime import Runtime
from storage import Journal

from .conftest import BACKENDS, dump
from .models import Account, Deposit, GetBalance


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every test here runs on a SQLite file and on a PostgreSQL database (``db`` makes either)."""
    return str(request.param)


class Work(msgspec.Struct):
    id: int


class Done(msgspec.Struct):
    id: int
    first: str
    second: str


class Gate:
    """Effects block here while a test crashes the runtime under them."""

    open = anyio.Event()
    calls: list[tuple[str, str]] = []

    @classmethod
    def reset(cls) -> None:
        cls.open = anyio.Event()
        cls.calls = []


async def first_effect(key: str) -> str:
    Gate.calls.append(("first", key))
    return f"first:{key}"


async def second_effect(key: str) -> str:
    Gate.calls.append(("second", key))
    await Gate.open.wait()
    return f"second:{key}"


class Worker(Actor):
    class State(msgspec.Struct):
        done: list[int] = msgspec.field(default_factory=list)

    state: State

    @handler
    async def work(self, msg: Work) -> list[int]:
        a = await self.ctx.effect(first_effect, self.ctx.idempotency_key)
        b = await self.ctx.effect(second_effect, self.ctx.idempotency_key)
        self.emit(Done(msg.id, a, b))
        return self.state.done

    @apply
    def _done(self, ev: Done) -> None:
        self.state.done.append(ev.id)


async def wait_for(predicate: object, timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():  # type: ignore[operator]
            await anyio.sleep(0.005)


async def test_g1_an_acknowledged_tell_survives_a_crash_right_after(db: str) -> None:
    rt = await Runtime(db, actors=[Account]).__aenter__()
    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(rt.tell, f"Account/{i % 7}", Deposit(i + 1))
    await rt.abandon()  # every tell above has returned: each must be durable
    async with Runtime(db, actors=[Account]) as rt2:
        balances = [await rt2.ask(f"Account/{k}", GetBalance()) for k in range(7)]
    assert sum(balances) == sum(range(1, 51))


async def test_g2_g3_a_crash_mid_step_reruns_it_without_repeating_journaled_effects(db: str) -> None:
    Gate.reset()
    rt = await Runtime(db, actors=[Worker]).__aenter__()
    await rt.tell("Worker/w", Work(1))
    await wait_for(lambda: len(Gate.calls) == 2)  # first journaled, second running
    await rt.abandon()
    before = dump(db)
    assert [(e.kind) for e in Journal.open(db).entries("Worker/w")] == ["message", "effect"]

    Gate.open.set()
    async with Runtime(db, actors=[Worker]) as rt2:
        await wait_for(lambda: len(Gate.calls) == 3)
        assert await rt2.ask("Worker/w", Work(2)) == [1, 2]
    # G3: the journaled first effect did not run again; the interrupted second
    # one did, with the same idempotency key.
    assert [name for name, _ in Gate.calls].count("first") == 2  # once per message
    assert Gate.calls[2][0] == "second" and Gate.calls[2][1] == Gate.calls[1][1]
    with Journal.open(db) as journal:
        kinds = [(e.kind, e.step) for e in journal.entries("Worker/w")]
        assert journal.pending() == []
    step = kinds[0][1]
    # G2: one message, one event, one reply for the interrupted step; seqs contiguous.
    assert [k for k, s in kinds if s == step] == ["message", "effect", "effect", "event", "reply"]
    assert before["inbox"] and not dump(db)["inbox"]


async def test_g2_a_committed_step_is_never_processed_again(db: str) -> None:
    async with Runtime(db, actors=[Account]) as rt:
        await rt.tell("Account/x", Deposit(5))
        assert await rt.ask("Account/x", GetBalance()) == 5
        await rt.abandon()
    async with Runtime(db, actors=[Account]) as rt2:
        assert await rt2.ask("Account/x", GetBalance()) == 5
    with Journal.open(db) as journal:
        assert [e.kind for e in journal.entries("Account/x", kind="event")] == ["event"]


async def test_g2_every_step_is_complete_or_absent(db: str) -> None:
    """No step has events without its reply, or a reply while its message is pending."""
    async with Runtime(db, actors=[Account]) as rt:
        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(rt.tell, f"Account/{i % 13}", Deposit(1))
        await anyio.sleep(0)
        await rt.abandon()
    with Journal.open(db) as journal:
        pending = {p.id for p in journal.pending()}
        for actor in journal.actors():
            steps: dict[int, list[str]] = {}
            for entry in journal.entries(actor.address):
                steps.setdefault(entry.step, []).append(entry.kind)
            for step, kinds in steps.items():
                assert kinds == ["message", "event", "reply"], (actor.address, step, kinds)
                assert step not in pending
    async with Runtime(db, actors=[Account]) as rt2:
        total = sum([await rt2.ask(f"Account/{k}", GetBalance()) for k in range(13)])
    assert total == 200


class Append(msgspec.Struct):
    sender: str
    n: int


class Appended(msgspec.Struct):
    sender: str
    n: int


class Log(Actor):
    class State(msgspec.Struct):
        items: list[tuple[str, int]] = msgspec.field(default_factory=list)

    @handler
    async def append(self, msg: Append) -> None:
        self.emit(Appended(msg.sender, msg.n))

    @apply
    def _appended(self, ev: Appended) -> None:
        self.state.items.append((ev.sender, ev.n))


async def test_g4_messages_from_one_sender_are_processed_in_order(db: str) -> None:
    async def sender(rt: Runtime, name: str, start: int, count: int) -> None:
        for n in range(start, start + count):
            if n % 3:
                await rt.tell("Log/l", Append(name, n))
            else:
                await rt.ask("Log/l", Append(name, n))

    async with Runtime(db, actors=[Log]) as rt, anyio.create_task_group() as tg:
        for s in "abcd":
            tg.start_soon(sender, rt, s, 0, 30)
    async with Runtime(db, actors=[Log]) as rt, anyio.create_task_group() as tg:
        for s in "abcd":
            tg.start_soon(sender, rt, s, 30, 30)
    async with Runtime(db, actors=[Log]) as rt:
        # Closing leaves unstarted messages to recovery; this ask comes after them.
        await rt.ask("Log/l", Append("z", 0))
    with Journal.open(db) as journal:
        items = [msgspec.msgpack.decode(e.data, type=Appended) for e in journal.entries("Log/l", kind="event")]
    for s in "abcd":
        assert [i.n for i in items if i.sender == s] == list(range(60))


async def test_g1_tells_accepted_just_before_close_are_kept(db: str) -> None:
    rt = await Runtime(db, actors=[Account]).__aenter__()
    acknowledged: list[int] = []

    async def tell(i: int) -> None:
        await rt.tell(f"Account/{i % 3}", Deposit(i))
        acknowledged.append(i)

    async with anyio.create_task_group() as tg:
        for i in range(1, 101):
            tg.start_soon(tell, i)
        tg.start_soon(rt.close)  # runs after the tells, before their inbox rows are handed over
    assert sorted(acknowledged) == list(range(1, 101))
    async with Runtime(db, actors=[Account]) as rt2:
        total = sum([await rt2.ask(f"Account/{k}", GetBalance()) for k in range(3)])
    assert total == sum(range(1, 101))
