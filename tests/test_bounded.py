"""Bounded resources: nothing one workload does may exhaust what another needs,
and nothing the runtime keeps in memory grows without bound."""

from __future__ import annotations

import threading

import anyio
import msgspec
import pytest

from actors import Actor, BackpressureError, apply, handler
from runtime import Runtime, VirtualClock
from storage import Journal

from .conftest import BACKENDS
from .models import Account, Deposit, GetBalance


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every test here runs on a SQLite file and on a PostgreSQL database (``db`` makes either)."""
    return str(request.param)


RELEASE = threading.Event()
STARTED: list[int] = []


def blocking_call(n: int) -> int:
    """A synchronous SDK call that takes its time (an LLM behind a blocking client)."""
    STARTED.append(n)
    RELEASE.wait(30)
    return n


class Think(msgspec.Struct):
    n: int


class Thought(msgspec.Struct):
    n: int


class Thinker(Actor):
    class State(msgspec.Struct):
        thoughts: int = 0

    state: State

    @handler
    async def think(self, msg: Think) -> int:
        n = await self.ctx.effect(blocking_call, msg.n)
        self.emit(Thought(n))
        return n

    @apply
    def _thought(self, ev: Thought) -> None:
        self.state.thoughts += 1


async def test_blocking_effects_do_not_stall_loading_actors(db: str) -> None:
    # Forty-five synchronous effects blocked in their threads: they used to
    # hold every thread of anyio's default pool (40), which loading an actor
    # from the journal needs too, so no other actor could start.
    RELEASE.clear()
    STARTED.clear()
    async with Runtime(db, actors=[Thinker, Account]) as rt:
        await rt.ask("Account/fresh", Deposit(1))
        await rt.close()
    async with Runtime(db, actors=[Thinker, Account]) as rt:
        try:
            for n in range(45):
                await rt.tell(f"Thinker/{n}", Think(n))
            with anyio.fail_after(10):
                while len(STARTED) < 45:
                    await anyio.sleep(0.01)
                # Account/fresh is in the journal, not in memory: it must be loaded.
                assert await rt.ask("Account/fresh", GetBalance()) == 1
        finally:
            RELEASE.set()
        with anyio.fail_after(30):
            assert await rt.ask("Thinker/0", Think(0)) == 0


async def test_expired_idempotency_keys_are_purged_in_bounded_batches(db: str) -> None:
    clock = VirtualClock()
    async with Runtime(db, actors=[Account], clock=clock, idempotency_retention_s=60) as rt:
        for i in range(2_500):
            await rt.tell(f"Account/{i % 10}", Deposit(1), idempotency_key=f"old-{i}")
        clock.advance(120)
        await rt.tell("Account/0", Deposit(1), idempotency_key="fresh")
        before = rt.stats.batches
        assert await rt.purge_idempotency_keys(batch=1_000) == 2_500
        assert rt.stats.batches - before >= 3  # 1,000 + 1,000 + 500: one commit each at least
        await rt.tell("Account/0", Deposit(1), idempotency_key="fresh")  # still known: not enqueued again
        assert await rt.ask("Account/0", GetBalance()) == 251
    with Journal.open(db) as journal:
        assert journal.idempotent("old-0") is None and journal.idempotent("old-2499") is None
        assert journal.idempotent("fresh") is not None


class Plan(msgspec.Struct):
    count: int
    cancel: bool = True


class Later(msgspec.Struct):
    pass


class Planner(Actor):
    class State(msgspec.Struct):
        timers: list[str] = msgspec.field(default_factory=list)

    state: State

    @handler
    async def plan(self, msg: Plan) -> int:
        ids = [self.ctx.schedule(365 * 24 * 3600.0, self.address, Later()) for _ in range(msg.count)]
        self.emit(Planned(ids))
        return len(ids)

    @handler
    async def unplan(self, msg: Later) -> int:
        for timer_id in self.state.timers:
            self.ctx.cancel(timer_id)
        self.emit(Planned([]))
        return 0

    @apply
    def _planned(self, ev: Planned) -> None:
        self.state.timers = ev.ids


class Planned(msgspec.Struct):
    ids: list[str]


async def test_cancelled_far_future_timers_do_not_pile_up(db: str) -> None:
    # A cancelled timer used to stay in the in-memory heap until it would have
    # been due: a year, here, for every one of them.
    async with Runtime(db, actors=[Planner], clock=VirtualClock()) as rt:
        for _ in range(20):
            assert await rt.ask("Planner/p", Plan(100)) == 100
            assert await rt.ask("Planner/p", Later()) == 0
        assert len(rt.timers) == 0
        assert rt.timers.heap_size <= 200


async def test_a_refused_send_leaves_nothing_behind(db: str) -> None:
    # A tell or an ask refused by backpressure, or an actor's send refused
    # likewise, used to leave an empty cell behind for its address, for good.
    RELEASE.clear()
    STARTED.clear()
    async with Runtime(db, actors=[Thinker, Account], max_pending=1) as rt:
        try:
            await rt.tell("Thinker/busy", Think(0))  # the one pending message, held in its effect
            for k in range(100):
                with pytest.raises(BackpressureError):
                    await rt.tell(f"Account/{k}", Deposit(1))
                with pytest.raises(BackpressureError):
                    await rt.ask(f"Account/{k}", GetBalance())
            assert rt.statistics().addresses == 1  # Thinker/busy: no cell for any refused address
        finally:
            RELEASE.set()
