"""A Hypothesis machine over tells, actors' sends and asks, timers and crashes
between a handful of actors. Invariants: nothing acknowledged is lost or
duplicated, each sender's messages arrive in the order sent, timers fire
exactly once and never early."""

from __future__ import annotations

import anyio
import hypothesis
import msgspec
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule

from actors import Actor, apply, handler
from runtime import Runtime, VirtualClock
from storage import Journal

from .machines import PortalMachine

NODES = [f"Node/{k}" for k in "abc"]


class Recv(msgspec.Struct):
    sender: str
    n: int
    due: float = 0.0


class Relay(msgspec.Struct):
    to: str
    n: int


class Call(msgspec.Struct):
    to: str
    n: int


class Later(msgspec.Struct):
    to: str
    n: int
    delay: float


class Sync(msgspec.Struct):
    pass


class Received(msgspec.Struct):
    sender: str
    n: int
    due: float
    at: float


class Node(Actor):
    @handler
    async def recv(self, msg: Recv) -> None:
        self.emit(Received(msg.sender, msg.n, msg.due, self.ctx.now()))

    @handler
    async def relay(self, msg: Relay) -> None:
        await self.ctx.tell(msg.to, Recv(self.address, msg.n))

    @handler
    async def call(self, msg: Call) -> None:
        await self.ctx.ask(msg.to, Recv(f"ask:{self.address}", msg.n), timeout=30)

    @handler
    async def later(self, msg: Later) -> None:
        due = self.ctx.now() + msg.delay
        self.ctx.schedule(msg.delay, msg.to, Recv(f"timer:{self.address}", msg.n, due))

    @handler
    async def sync(self, msg: Sync) -> None:
        pass

    @apply
    def _received(self, ev: Received) -> None:
        pass


class CallsMachine(PortalMachine):
    def __init__(self) -> None:
        super().__init__("stele-calls-")
        self.clock = VirtualClock()
        self.rt = self.portal.call(self._open)
        self.sent: dict[str, list[tuple[str, int]]] = {k: [] for k in NODES}  # receiver -> (sender, n)
        self.timers: dict[str, list[tuple[int, float]]] = {k: [] for k in NODES}  # receiver -> (n, due)
        self.n = 0

    async def _open(self) -> Runtime:
        return await Runtime(self.db, actors=[Node], clock=self.clock, rng=self.rng).__aenter__()

    def _next(self) -> int:
        self.n += 1
        return self.n

    @rule(to=st.sampled_from(NODES))
    def tell(self, to: str) -> None:
        n = self._next()
        self.portal.call(self.rt.tell, to, Recv("client", n))
        self.sent[to].append(("client", n))

    @rule(via=st.sampled_from(NODES), to=st.sampled_from(NODES))
    def relay(self, via: str, to: str) -> None:
        n = self._next()
        self.portal.call(self.rt.ask, via, Relay(to, n))
        self.sent[to].append((via, n))

    @rule(via=st.sampled_from(NODES), to=st.sampled_from(NODES))
    def call(self, via: str, to: str) -> None:
        if via == to:
            return  # an actor asking itself is a cycle, refused by design
        n = self._next()
        self.portal.call(self.rt.ask, via, Call(to, n))
        self.sent[to].append((f"ask:{via}", n))

    @rule(via=st.sampled_from(NODES), to=st.sampled_from(NODES), delay=st.integers(1, 3600))
    def later(self, via: str, to: str, delay: int) -> None:
        n = self._next()
        self.portal.call(self.rt.ask, via, Later(to, n, float(delay)))
        self.timers[to].append((n, self.clock() + delay))  # the virtual clock stands still within a rule

    @rule(seconds=st.integers(1, 4000))
    def advance(self, seconds: int) -> None:
        self.clock.advance(float(seconds))

    @rule()
    def crash_and_recover(self) -> None:
        self.portal.call(self.rt.abandon)
        self.rt = self.portal.call(self._open)

    @invariant()
    def nothing_lost_duplicated_or_reordered(self) -> None:
        async def drain() -> None:
            for _ in range(100):  # until nothing is due or waiting (bounded)
                await anyio.sleep(0.002)  # the timer task delivers what is due
                for node in NODES:
                    await self.rt.ask(node, Sync())
                stats = self.rt.statistics()
                due = stats.next_timer_due
                if stats.pending == 0 and (due is None or due > self.clock()):
                    return

        self.portal.call(drain)
        now = self.clock()
        with Journal.open(self.db) as journal:
            for node in NODES:
                got = [msgspec.msgpack.decode(e.data, type=Received) for e in journal.entries(node, kind="event")]
                direct = [(r.sender, r.n) for r in got if not r.sender.startswith("timer:")]
                fired = [r for r in got if r.sender.startswith("timer:")]
                assert direct == self.sent[node]  # exactly once each, in the order sent
                assert all(r.at >= r.due for r in fired)  # never early
                assert len({r.n for r in fired}) == len(fired)  # exactly once
                scheduled = {n for n, _ in self.timers[node]}
                assert {r.n for r in fired} <= scheduled
                due = {n for n, when in self.timers[node] if when <= now}
                assert {r.n for r in fired} == due  # every due timer fired, no other


CallsMachine.TestCase.settings = hypothesis.settings(
    max_examples=20, stateful_step_count=15, deadline=None, suppress_health_check=[hypothesis.HealthCheck.too_slow]
)
TestCallsMachine = CallsMachine.TestCase


class PgCallsMachine(CallsMachine):
    """The same machine on PostgreSQL."""

    backend = "postgres"


PgCallsMachine.TestCase.settings = hypothesis.settings(CallsMachine.TestCase.settings, max_examples=10)
TestPgCallsMachine = PgCallsMachine.TestCase
