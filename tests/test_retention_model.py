"""A Hypothesis state machine for retention: messages, snapshots, compaction, forks and crashes interleaved.

Every journal position is recorded with its state (as ``state --at`` gives it)
the first time it is seen, before any compaction could touch it. Invariants
after every rule: every position an actor still keeps gives exactly that
state, every older one raises OutsideRetentionError, and nothing acknowledged
is lost (the live state is the model's, and so is the state rebuilt from the
journal).
"""

from __future__ import annotations

import os

import hypothesis
import msgspec
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule

from actors import OutsideRetentionError, Retention, apply, handler
from actors._actor import describe
from runtime import Registry, Runtime, VirtualClock, load
from storage import Journal

from .chunks import chunk_graph
from .conftest import LONG_SCALE
from .conversation import prose
from .machines import PortalMachine
from .models import Account, Deposit, GetBalance

NOTES = [prose(seed, 1500 + 100 * (seed % 10)) for seed in range(30)]
"""Above the payload threshold: stored as chunks, each note once however often it is sent (by any actor)."""
NOTE = st.integers(0, len(NOTES) - 1)
"""A note by its index: Hypothesis prints the rules it ran, and a note is kilobytes."""


class Memo(msgspec.Struct):
    amount: int
    note: str


class Memoed(msgspec.Struct):
    amount: int
    note: str


class Memos(Account):
    """An account whose deposits may carry a large note: in the message, the event, the reply (and the state)."""

    class State(Account.State):
        note: str = ""

    state: State

    @handler
    async def memo(self, msg: Memo) -> str:
        self.emit(Memoed(msg.amount, msg.note))
        return msg.note

    @apply
    def _memoed(self, ev: Memoed) -> None:
        self.state.balance += ev.amount
        self.state.history.append(ev.amount)
        self.state.note = ev.note if ev.amount % 2 else ""  # in later snapshots too, or in history alone


class ByCount(Memos):
    """Keeps the history from its second newest snapshot on."""

    name = "Account"
    snapshot_every = 3
    retention = Retention(snapshots=2)


class ByAge(Memos):
    """Keeps a minute (and the snapshot before it)."""

    snapshot_every = 2
    retention = Retention(age=60)


KEYS = [f"Account/{k}" for k in "abc"] + [f"ByAge/{k}" for k in "xy"]
CLASSES: list[type[Memos]] = [ByCount, ByAge]


class RetentionMachine(PortalMachine):
    def __init__(self) -> None:
        super().__init__("stele-retention-")
        self.clock = VirtualClock()
        self.rt = self.portal.call(self._open)
        self.model: dict[str, list[int]] = {k: [] for k in KEYS}
        self.seen: dict[str, dict[int, list[int]]] = {k: {} for k in KEYS}
        self.forks = 0
        self.registry = Registry(CLASSES)

    async def _open(self) -> Runtime:
        return await Runtime(self.db, actors=CLASSES, rng=self.rng, clock=self.clock, max_active=3).__aenter__()

    def _history(self, journal: Journal, key: str, position: int | None = None) -> list[int]:
        desc, name = self.registry.resolve(key)
        seq = journal.seq_at(key, position) if position is not None else None
        loaded = load(journal, desc, self.registry.codec, key, name, until_seq=seq)
        history: list[int] = loaded.instance.state.history
        return history

    def _record(self) -> None:
        """Drain what is pending, then note the state at every position not seen yet."""
        for key in KEYS:
            self.portal.call(self.rt.ask, key, GetBalance())
        with Journal.open(self.db) as journal:
            for key in KEYS:
                for entry in journal.entries(key):
                    if entry.position not in self.seen[key]:
                        self.seen[key][entry.position] = self._history(journal, key, entry.position)

    @rule(key=st.sampled_from(KEYS), amount=st.integers(1, 100), ask=st.booleans())
    def deposit(self, key: str, amount: int, ask: bool) -> None:
        send = self.rt.ask if ask else self.rt.tell
        self.portal.call(send, key, Deposit(amount))
        self.model[key].append(amount)

    @rule(key=st.sampled_from(KEYS), amount=st.integers(1, 100), which=NOTE, ask=st.booleans())
    def memo(self, key: str, amount: int, which: int, ask: bool) -> None:
        note = NOTES[which]
        if ask:
            assert self.portal.call(self.rt.ask, key, Memo(amount, note)) == note
        else:
            self.portal.call(self.rt.tell, key, Memo(amount, note))
        self.model[key].append(amount)

    @rule(
        key=st.sampled_from(KEYS),
        amounts=st.lists(st.tuples(st.integers(1, 9), st.none() | NOTE), min_size=2, max_size=8),
    )
    def burst(self, key: str, amounts: list[tuple[int, int | None]]) -> None:
        for amount, which in amounts:
            message = Deposit(amount) if which is None else Memo(amount, NOTES[which])
            self.portal.call(self.rt.tell, key, message)
            self.model[key].append(amount)

    @rule(seconds=st.sampled_from([1, 20, 45, 90]))
    def time_passes(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @rule(batch=st.sampled_from([1, 2, 7, 1000]))
    def compact(self, batch: int) -> None:
        self._record()  # what is there now is what must stay exact
        self.portal.call(lambda: self.rt.compact(batch=batch))
        if self.backend == "sqlite":  # compaction reclaims: every chunk left is named by a row
            assert chunk_graph(self.db).unreferenced == set()

    @rule()
    def crash_and_recover(self) -> None:
        self.portal.call(self.rt.abandon)
        self.rt = self.portal.call(self._open)

    @precondition(lambda self: self.forks < 4)
    @rule(key=st.sampled_from(KEYS), pick=st.integers(0, 10**6))
    def fork(self, key: str, pick: int) -> None:
        self._record()
        with Journal.open(self.db) as journal:
            kept = [e.position for e in journal.entries(key)]
        if not kept:
            return
        position = kept[pick % len(kept)]
        self.forks += 1
        to = f"{key.split('/', maxsplit=1)[0]}/fork{self.forks}"
        self.portal.call(lambda: self.rt.fork(key, at=position, to=to))
        with Journal.open(self.db) as journal:
            assert self._history(journal, to) == self.seen[key][position]

    @invariant()
    def no_reference_names_a_missing_chunk(self) -> None:
        if self.backend == "sqlite":  # PostgreSQL keeps every value in its row
            assert chunk_graph(self.db).missing == set()

    @invariant()
    def retained_positions_are_exact_and_nothing_acknowledged_is_lost(self) -> None:
        self._record()
        with Journal.open(self.db) as journal:
            for key in KEYS:
                assert self.portal.call(self.rt.ask, key, GetBalance()) == sum(self.model[key])
                assert self._history(journal, key) == self.model[key]
                kept = [e.position for e in journal.entries(key)]
                earliest = kept[0] if kept else None
                for position, expected in self.seen[key].items():
                    if earliest is not None and position >= earliest:
                        assert self._history(journal, key, position) == expected, (key, position)
                    else:
                        with pytest.raises(OutsideRetentionError):
                            journal.seq_at(key, position)


RetentionMachine.TestCase.settings = hypothesis.settings(
    max_examples=20, stateful_step_count=20, deadline=None, suppress_health_check=[hypothesis.HealthCheck.too_slow]
)
TestRetentionMachine = RetentionMachine.TestCase


class PgRetentionMachine(RetentionMachine):
    """The same machine on PostgreSQL (a crash there is the runtime's session gone)."""

    backend = "postgres"


# Fewer examples in the fast tier: every check reads the journal over connections of its own.
PgRetentionMachine.TestCase.settings = hypothesis.settings(
    RetentionMachine.TestCase.settings,
    max_examples=4 * (LONG_SCALE if os.environ.get("STELE_LONG", "") not in ("", "0") else 1),
)
TestPgRetentionMachine = PgRetentionMachine.TestCase


def test_the_retained_types_are_what_the_machine_assumes() -> None:
    assert describe(ByCount).type_name == "Account" and describe(ByAge).type_name == "ByAge"
