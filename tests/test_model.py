"""A Hypothesis state machine over the runtime: send, burst, crash, restart.

Invariants after every rule: live state == model == full replay == snapshot +
tail replay, and every actor's sequence numbers are contiguous.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import anyio
import hypothesis
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule

from actors import (
    AskTimeoutError,
    BackpressureError,
    CommitUnknownError,
    HandlerError,
    JournalError,
    ReplyUnavailableError,
)
from actors._actor import describe
from runtime import Registry, Runtime, load
from storage import Journal

from .conftest import LONG_SCALE
from .faults import FaultVFS
from .machines import PortalMachine
from .models import Account, Deposit, GetBalance, Withdraw
from .report import add

KEYS = [f"Account/{k}" for k in "abcde"]


class Frequent(Account):
    """Snapshots every three events, so the machine crosses many snapshots."""

    name = "Account"
    snapshot_every = 3


class RuntimeMachine(PortalMachine):
    def __init__(self) -> None:
        super().__init__("stele-model-")
        self.rt = self.portal.call(self._open)
        self.model: dict[str, list[int]] = {k: [] for k in KEYS}

    async def _open(self) -> Runtime:
        return await Runtime(self.db, actors=[Frequent], rng=self.rng, max_active=3).__aenter__()

    @rule(key=st.sampled_from(KEYS), amount=st.integers(1, 100), ask=st.booleans())
    def deposit(self, key: str, amount: int, ask: bool) -> None:
        send = self.rt.ask if ask else self.rt.tell
        self.portal.call(send, key, Deposit(amount))
        self.model[key].append(amount)

    @rule(key=st.sampled_from(KEYS), amount=st.integers(1, 150))
    def withdraw(self, key: str, amount: int) -> None:
        try:
            self.portal.call(self.rt.ask, key, Withdraw(amount))
        except HandlerError:
            assert sum(self.model[key]) < amount
        else:
            assert sum(self.model[key]) >= amount
            self.model[key].append(-amount)

    @rule(sends=st.lists(st.tuples(st.sampled_from(KEYS), st.integers(1, 9)), min_size=2, max_size=12))
    def burst(self, sends: list[tuple[str, int]]) -> None:
        async def all_at_once() -> None:
            async with anyio.create_task_group() as tg:
                for key, amount in sends:
                    tg.start_soon(self.rt.tell, key, Deposit(amount))

        self.portal.call(all_at_once)
        for key, amount in sends:  # G4: one sender's tells to one actor keep their order
            self.model[key].append(amount)

    @rule()
    def crash_and_recover(self) -> None:
        self.portal.call(self.rt.abandon)
        self.rt = self.portal.call(self._open)

    @rule()
    def restart(self) -> None:
        self.portal.call(self.rt.close)
        self.rt = self.portal.call(self._open)

    @invariant()
    def states_agree(self) -> None:
        registry = Registry([Frequent])
        for key in KEYS:
            live = self.portal.call(self.rt.ask, key, GetBalance())  # also drains what is pending
            assert live == sum(self.model[key])
            with Journal.open(self.db) as journal:
                full = self._rebuild(journal, registry, key, use_snapshots=False)
                fast = self._rebuild(journal, registry, key, use_snapshots=True)
                seqs = [e.seq for e in journal.entries(key)]
            assert full.history == fast.history == self.model[key]
            assert seqs == list(range(1, len(seqs) + 1))
        assert self.rt.statistics().pending == 0  # every accepted message was consumed, and counted so

    @staticmethod
    def _rebuild(journal: Journal, registry: Registry, key: str, *, use_snapshots: bool) -> Any:
        loaded = load(journal, describe(Frequent), registry.codec, key, key.split("/")[1], use_snapshots=use_snapshots)
        return loaded.instance.state


RuntimeMachine.TestCase.settings = hypothesis.settings(
    max_examples=25, stateful_step_count=20, deadline=None, suppress_health_check=[hypothesis.HealthCheck.too_slow]
)
TestRuntimeMachine = RuntimeMachine.TestCase


class PgRuntimeMachine(RuntimeMachine):
    """The same machine on PostgreSQL: a crash there is the runtime's session gone."""

    backend = "postgres"


# Fewer examples in the fast tier: each check reads the journal over a connection of its own,
# which costs milliseconds on a server where SQLite costs microseconds (--long runs more).
PgRuntimeMachine.TestCase.settings = hypothesis.settings(
    RuntimeMachine.TestCase.settings,
    max_examples=10 * (LONG_SCALE if os.environ.get("STELE_LONG", "") not in ("", "0") else 1),
)
TestPgRuntimeMachine = PgRuntimeMachine.TestCase


def fits(model: list[tuple[int, bool]], history: list[int]) -> bool:
    """Whether ``history`` is ``model`` with each uncertain entry (False) either kept or left out."""

    @functools.cache
    def match(m: int, h: int) -> bool:
        if m == len(model):
            return h == len(history)
        amount, certain = model[m]
        if h < len(history) and history[h] == amount and match(m + 1, h + 1):
            return True
        return not certain and match(m + 1, h)

    return match(0, 0)


class FaultyRuntimeMachine(RuntimeMachine):
    """The same machine over a fault-injecting VFS, with a rule that arms a fault.

    An armed fault fails the N-th I/O operation of the next rules (once, as an
    I/O error or a full disk); the invariant heals the disk before checking.
    Every call's outcome is what the client saw: ok is in the model, a definite
    failure is not, an unknown outcome may be either, and the journal decides.
    """

    def __init__(self) -> None:
        self.fault = FaultVFS(f"model-{id(self)}")
        self.maybe: dict[str, list[tuple[int, bool]]] = {k: [] for k in KEYS}
        self.faults = 0
        self.just_armed = False
        super().__init__()

    async def _open(self) -> Runtime:
        for _ in range(3):
            try:
                return await Runtime(
                    self.db, actors=[Frequent], rng=self.rng, max_active=3, vfs=self.fault.name
                ).__aenter__()
            except JournalError:
                self.fault.heal()  # the fault hit the opening: a clear error, then a clean start
        raise AssertionError("the runtime does not open on a healthy disk")

    @rule(at=st.integers(1, 40), full=st.booleans())
    def arm_fault(self, at: int, full: bool) -> None:
        self.fault.arm(at, full=full)
        self.faults += 1
        self.just_armed = True  # the check after this rule waits: the fault is for the next one

    def _sent(self, key: str, amount: int, error: BaseException | None) -> None:
        if error is None:
            self.maybe[key].append((amount, True))
        elif isinstance(error, CommitUnknownError | AskTimeoutError | ReplyUnavailableError):
            self.maybe[key].append((amount, False))
        # else a definite failure: nothing was accepted

    def _call(self, fn: Any, *args: Any) -> BaseException | None:
        try:
            self.portal.call(fn, *args)
        except (JournalError, BackpressureError, ReplyUnavailableError, AskTimeoutError) as exc:
            return exc
        return None

    @rule(key=st.sampled_from(KEYS), amount=st.integers(1, 100), ask=st.booleans())
    def deposit(self, key: str, amount: int, ask: bool) -> None:
        self._sent(key, amount, self._call(self.rt.ask if ask else self.rt.tell, key, Deposit(amount)))

    @rule(key=st.sampled_from(KEYS), amount=st.integers(1, 150))
    def withdraw(self, key: str, amount: int) -> None:
        try:
            error = self._call(self.rt.ask, key, Withdraw(amount))
        except HandlerError:
            assert sum(self.model[key]) < amount
            return
        if error is None:
            assert sum(self.model[key]) >= amount
        self._sent(key, -amount, error)

    @rule(sends=st.lists(st.tuples(st.sampled_from(KEYS), st.integers(1, 9)), min_size=2, max_size=12))
    def burst(self, sends: list[tuple[str, int]]) -> None:
        errors: list[BaseException | None] = [None] * len(sends)

        async def send(i: int, key: str, amount: int) -> None:
            try:
                await self.rt.tell(key, Deposit(amount))
            except (JournalError, BackpressureError) as exc:
                errors[i] = exc

        async def all_at_once() -> None:
            async with anyio.create_task_group() as tg:
                for i, (key, amount) in enumerate(sends):
                    tg.start_soon(send, i, key, amount)

        self.portal.call(all_at_once)
        for (key, amount), error in zip(sends, errors, strict=True):
            self._sent(key, amount, error)

    @invariant()
    def states_agree(self) -> None:
        if self.just_armed:
            self.just_armed = False
            return
        self.fault.heal()
        with Journal.open(self.db) as journal:
            for key in KEYS:
                self.portal.call(self._drain, key)
                history = [e.decoded()["amount"] * (1 if e.type == "Deposited" else -1)
                           for e in journal.entries(key, kind="event")]  # fmt: skip
                expected = [(a, True) for a in self.model[key]] + self.maybe[key]
                assert fits(expected, history), f"{key}: {history} is not {expected}"
                self.model[key], self.maybe[key] = history, []  # the journal settled the unknowns
        super().states_agree()

    async def _drain(self, key: str) -> None:
        """Ask ``key`` until it answers: what is pending runs first.

        After healing, the runtime learns that the disk is back only from a
        commit that succeeds; until then it refuses new messages
        (``BackpressureError``: nothing accepted), letting one through every
        probe interval. A refusal is definite, so retrying is what a client
        does; the bound is the journal health's own probe rhythm, many times over.
        """
        with anyio.fail_after(30):
            while True:
                try:
                    await self.rt.ask(key, GetBalance())
                    return
                except BackpressureError:
                    await anyio.sleep(0.05)

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            add("Hypothesis machine with faults", faults_armed=self.faults, injected=self.fault.injected)
            self.fault.close()


FaultyRuntimeMachine.TestCase.settings = hypothesis.settings(
    max_examples=60 * (LONG_SCALE if os.environ.get("STELE_LONG", "") not in ("", "0") else 1),
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
TestFaultyRuntimeMachine = FaultyRuntimeMachine.TestCase
