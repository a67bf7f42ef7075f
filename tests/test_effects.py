"""Effects: results and errors journaled, the same live and on replay; ctx.tell; step ids."""

from __future__ import annotations

from pathlib import Path

import anyio
import msgspec
import pytest

from actors import Actor, EffectError, apply, handler
from runtime import Runtime
from storage import Journal, PgStore, Store, open_backend

from .conftest import BACKENDS
from .models import Account, Deposit, Fetch, GetBalance, Record, Recorder


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every test here runs on a SQLite file and on a PostgreSQL database (``db`` makes either)."""
    return str(request.param)


class Charge(msgspec.Struct):
    amount: int


class Receipt(msgspec.Struct):
    id: str
    amount: int


class Charged(msgspec.Struct):
    outcome: str


class Calls:
    count = 0
    hold = anyio.Event()


def flaky_gateway(amount: int) -> Receipt:
    Calls.count += 1
    if amount > 100:
        raise ConnectionError(f"gateway refused {amount}")
    return Receipt(f"r-{amount}", amount)


async def slow_audit(amount: int) -> None:
    await Calls.hold.wait()


class Payments(Actor):
    class State(msgspec.Struct):
        outcomes: list[str] = msgspec.field(default_factory=list)

    state: State

    @handler
    async def charge(self, msg: Charge) -> str:
        try:
            receipt = await self.ctx.effect(flaky_gateway, msg.amount)
            outcome = f"ok {receipt.id}"  # typed: decoded as the return annotation
        except EffectError as exc:
            outcome = f"failed {exc.type_name}: {exc.message}"
        await self.ctx.effect(slow_audit, msg.amount)
        self.emit(Charged(outcome))
        return outcome

    @apply
    def _charged(self, ev: Charged) -> None:
        self.state.outcomes.append(ev.outcome)


async def test_effect_results_and_errors_come_back_the_same_on_replay(db: str) -> None:
    Calls.count, Calls.hold = 0, anyio.Event()
    rt = await Runtime(db, actors=[Payments]).__aenter__()
    await rt.tell("Payments/p", Charge(500))
    with anyio.fail_after(5):
        while [e.kind for e in Journal.open(db).entries("Payments/p")] != ["message", "effect"]:
            await anyio.sleep(0.005)
    await rt.abandon()  # crash while the audit effect is in flight
    assert Calls.count == 1
    Calls.hold.set()
    async with Runtime(db, actors=[Payments]) as rt2:
        # Replay: the journaled ConnectionError comes back as the same EffectError.
        assert await rt2.ask("Payments/p", Charge(7)) == "ok r-7"
    assert Calls.count == 2  # the gateway ran once per message, never again on replay
    with Journal.open(db) as journal:
        outcomes = [e.decoded()["outcome"] for e in journal.entries("Payments/p", kind="event")]
    assert outcomes == ["failed ConnectionError: gateway refused 500", "ok r-7"]


class Forward(msgspec.Struct):
    to: str
    amount: int


class Forwarder(Actor):
    @handler
    async def forward(self, msg: Forward) -> None:
        await self.ctx.tell(msg.to, Deposit(msg.amount))
        if msg.amount < 0:
            raise ValueError("negative")  # the send is not kept either


async def test_ctx_tell_is_sent_with_the_step_and_only_if_it_commits(db: str) -> None:
    async with Runtime(db, actors=[Forwarder, Account]) as rt:
        await rt.ask("Forwarder/f", Forward("Account/a", 5))
        with pytest.raises(Exception, match="negative"):
            await rt.ask("Forwarder/f", Forward("Account/a", -3))
        with anyio.fail_after(5):
            while await rt.ask("Account/a", GetBalance()) != 5:
                await anyio.sleep(0.005)
    with Journal.open(db) as journal:
        kinds = [(e.kind, e.type) for e in journal.entries("Forwarder/f")]
        received = [e.decoded()["sender"] for e in journal.entries("Account/a", kind="message") if e.type == "Deposit"]
    assert kinds.count(("send", "Deposit")) == 1
    assert received == ["Forwarder/f"]
    with Journal.open(db) as journal:
        assert journal.pending() == []  # the sent message was consumed, not left to run again
    async with Runtime(db, actors=[Forwarder, Account]) as rt:
        assert await rt.ask("Account/a", GetBalance()) == 5  # and a restart does not re-run it


async def test_step_ids_are_never_reused_after_the_inbox_empties(db: str) -> None:
    async with Runtime(db, actors=[Account]) as rt:
        await rt.tell("Account/a", Deposit(1))
        await rt.ask("Account/a", GetBalance())
    with Journal.open(db) as journal:
        before = {e.step for e in journal.entries("Account/a")}
        assert journal.pending() == []
    async with Runtime(db, actors=[Account]) as rt:
        await rt.ask("Account/a", Deposit(2))
    with Journal.open(db) as journal:
        after = {e.step for e in journal.entries("Account/a")} - before
    assert len(after) == 1 and min(after) > max(before)


@pytest.mark.parametrize(
    ("durability", "synchronous", "synchronous_commit"), [("fsync", 2, "on"), ("normal", 1, "off")]
)
def test_durability_levels_set_synchronous(db: str, durability: str, synchronous: int, synchronous_commit: str) -> None:
    store = open_backend(db, durability=durability, notify=lambda results: None)
    try:
        if isinstance(store, Store):
            assert store.writer_pragma("synchronous") == synchronous
            assert store.writer_pragma("journal_mode") == "wal"
        else:
            assert isinstance(store, PgStore)
            assert store.synchronous_commit == synchronous_commit  # as the server reports it for the writer
    finally:
        store.close()


def test_an_unknown_durability_is_refused(db: str) -> None:
    with pytest.raises(ValueError, match="durability must be one of"):
        Runtime(db, actors=[Account], durability="sometimes")


async def test_tells_of_one_tick_to_actors_running_effects_are_all_processed(db: str, tmp_path: Path) -> None:
    # Each step waits for its tell's inbox commit before its first effect, and
    # the tells of one tick share that commit. Found by the power-loss harness:
    # the second step awaiting the shared future failed ("await wasn't used
    # with future") and its message stayed in the inbox until a restart.
    Recorder.trace_path = str(tmp_path / "trace")
    async with Runtime(db, actors=[Recorder]) as rt:
        async with anyio.create_task_group() as tg:
            for k in range(3):
                tg.start_soon(rt.tell, f"Recorder/{k}", Record(k))
        with anyio.fail_after(5):
            assert [await rt.ask(f"Recorder/{k}", Fetch()) for k in range(3)] == [[0], [1], [2]]
    with Journal.open(db) as journal:
        assert journal.pending() == []
