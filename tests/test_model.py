"""A Hypothesis state machine over the runtime: send, burst, crash, restart.

Invariants after every rule: live state == model == full replay == snapshot +
tail replay, and every actor's sequence numbers are contiguous.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from contextlib import AbstractContextManager
from typing import Any

import anyio
import hypothesis
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from actors import HandlerError
from actors._actor import describe
from runtime import Registry, Runtime, load
from storage import Journal

from .models import Account, Deposit, GetBalance, Withdraw

KEYS = [f"Account/{k}" for k in "abcde"]


class Frequent(Account):
    """Snapshots every three events, so the machine crosses many snapshots."""

    name = "Account"
    snapshot_every = 3


class RuntimeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="stele-model-")
        self.db = f"{self.dir}/journal.db"
        self._portal_cm: AbstractContextManager[BlockingPortal] = start_blocking_portal()
        self.portal = self._portal_cm.__enter__()
        self.rng = random.Random(0)
        hypothesis.register_random(self.rng)
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
        assert self.rt._pending == 0  # every accepted message was consumed, and counted so

    @staticmethod
    def _rebuild(journal: Journal, registry: Registry, key: str, *, use_snapshots: bool) -> Any:
        loaded = load(journal, describe(Frequent), registry.codec, key, key.split("/")[1], use_snapshots=use_snapshots)
        return loaded.instance.state

    def teardown(self) -> None:
        try:
            self.portal.call(self.rt.close)
        finally:
            self._portal_cm.__exit__(None, None, None)
            shutil.rmtree(self.dir, ignore_errors=True)


RuntimeMachine.TestCase.settings = hypothesis.settings(
    max_examples=25, stateful_step_count=20, deadline=None, suppress_health_check=[hypothesis.HealthCheck.too_slow]
)
TestRuntimeMachine = RuntimeMachine.TestCase
