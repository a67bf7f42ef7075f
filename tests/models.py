"""Actor classes the tests share (module level, so their annotations resolve)."""

from __future__ import annotations

import os
import time

import msgspec

from actors import Actor, apply, handler


class Deposit(msgspec.Struct):
    amount: int


class Withdraw(msgspec.Struct):
    amount: int


class GetBalance(msgspec.Struct):
    pass


class Deposited(msgspec.Struct):
    amount: int


class Withdrawn(msgspec.Struct):
    amount: int


class Account(Actor):
    """A bank account: the design document's running example."""

    class State(msgspec.Struct):
        balance: int = 0
        history: list[int] = msgspec.field(default_factory=list)

    state: State
    snapshot_every = 5

    @handler
    async def deposit(self, msg: Deposit) -> int:
        if msg.amount <= 0:
            raise ValueError("amount must be positive")
        self.emit(Deposited(msg.amount))
        return self.state.balance

    @handler
    async def withdraw(self, msg: Withdraw) -> int:
        self.emit(Withdrawn(msg.amount))
        if self.state.balance < 0:
            raise ValueError("insufficient funds")  # after an emit: nothing may be kept
        return self.state.balance

    @handler
    async def balance(self, msg: GetBalance) -> int:
        return self.state.balance

    @apply
    def _deposited(self, ev: Deposited) -> None:
        self.state.balance += ev.amount
        self.state.history.append(ev.amount)

    @apply
    def _withdrawn(self, ev: Withdrawn) -> None:
        self.state.balance -= ev.amount
        self.state.history.append(-ev.amount)


class Record(msgspec.Struct):
    """A message carrying an id the tests can count."""

    id: int
    sender: str = ""


class Recorded(msgspec.Struct):
    id: int
    sender: str
    token: str


class Fetch(msgspec.Struct):
    pass


def journal_effect(path: str, key: str) -> str:
    """An effect with a trace outside the journal: appends ``key token`` to ``path``."""
    token = os.urandom(8).hex()
    with open(path, "a") as f:
        f.write(f"{key} {token}\n")
        f.flush()
        os.fsync(f.fileno())
    return token


class Recorder(Actor):
    """Runs one effect per message (traced in a file), then emits one event."""

    trace_path = os.environ.get("STELE_RECORDER_TRACE", "")
    """Where the effect traces its runs (a server child gets it from the environment)."""

    class State(msgspec.Struct):
        seen: list[int] = msgspec.field(default_factory=list)
        by_sender: dict[str, list[int]] = msgspec.field(default_factory=dict)

    state: State
    snapshot_every = 7

    @handler
    async def record(self, msg: Record) -> int:
        key = self.ctx.idempotency_key
        token = await self.ctx.effect(journal_effect, type(self).trace_path, key)
        self.emit(Recorded(msg.id, msg.sender, token))
        return len(self.state.seen)

    @handler
    async def fetch(self, msg: Fetch) -> list[int]:
        return self.state.seen

    @apply
    def _recorded(self, ev: Recorded) -> None:
        self.state.seen.append(ev.id)
        self.state.by_sender.setdefault(ev.sender, []).append(ev.id)


# -- many nodes: a step under way when its node is stopped (tests/test_nodes.py) --------------------


class Worked(msgspec.Struct):
    id: int
    by: str


def slow_effect(path: str) -> str:
    """Note which node runs it, then take a while (a step under way when its node is stopped)."""
    name = os.environ.get("STELE_NODE_NAME", "?")
    with open(path, "a") as f:
        f.write(f"{name}\n")
        f.flush()
        os.fsync(f.fileno())
    time.sleep(float(os.environ.get("STELE_SLOW_EFFECT_S", "0")))
    return name


class Slow(Actor):
    """One slow, traced effect per message, then an event."""

    class State(msgspec.Struct):
        seen: list[int] = msgspec.field(default_factory=list)

    state: State

    @handler
    async def work(self, msg: Record) -> int:
        by = await self.ctx.effect(slow_effect, os.environ.get("STELE_RECORDER_TRACE", ""))
        self.emit(Worked(msg.id, by))
        return len(self.state.seen)

    @handler
    async def fetch(self, msg: Fetch) -> list[int]:
        return self.state.seen

    @apply
    def _worked(self, ev: Worked) -> None:
        self.state.seen.append(ev.id)
