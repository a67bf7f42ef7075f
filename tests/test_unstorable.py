"""A value the codec or SQLite cannot store fails the one call that brought it.

msgpack holds integers up to 2**64 - 1, SQLite up to 2**63 - 1, and text only
as UTF-8 (a str with a lone surrogate, as ``json.loads``, ``os.listdir`` and
``sys.argv`` produce, has no UTF-8 form). Such a value must fail its own call
with a clear error, while the actor, every other actor of the same round and
the writer carry on, and nothing acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import functools
import math

import anyio
import msgspec
import pytest

from actors import Actor, EffectError, HandlerError, UnstorableValueError, apply, handler
from runtime import Runtime
from storage import Done, Journal, Outcome, PutMeta, Unit, Unstorable, open_backend

from .conftest import BACKENDS, dump
from .models import Account, Deposit, GetBalance


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every test here runs on a SQLite file and on a PostgreSQL database (``db`` makes either)."""
    return str(request.param)


BIG = 2**63 - 1
SURROGATE = "x\udc80"


class Say(msgspec.Struct):
    text: str


class Compute(msgspec.Struct):
    what: str


class Said(msgspec.Struct):
    text: str


def huge() -> int:
    return 2**70


def shout(text: str) -> None:
    raise ValueError(f"cannot say {text}")


class Echo(Actor):
    class State(msgspec.Struct):
        said: list[str] = msgspec.field(default_factory=list)

    state: State

    @handler
    async def say(self, msg: Say) -> str:
        self.emit(Said(msg.text))
        return msg.text

    @handler
    async def compute(self, msg: Compute) -> object:
        if msg.what == "reply":
            return 2**70
        if msg.what == "effect":
            return await self.ctx.effect(huge)
        if msg.what == "error":
            try:
                await self.ctx.effect(shout, SURROGATE)
            except EffectError as exc:
                return exc.message
        if msg.what == "tell":
            await self.ctx.tell(f"Echo/{SURROGATE}", Say("hi"))
        if msg.what == "timer":
            self.ctx.schedule(math.nan, "Echo/a", Say("never"))
        if msg.what == "promise":
            await self.ctx.promise(SURROGATE)
        return None

    @apply
    def _said(self, ev: Said) -> None:
        self.state.said.append(ev.text)


class Add(msgspec.Struct):
    n: int


class Added(msgspec.Struct):
    n: int


class Total(msgspec.Struct):
    pass


class Tally(Actor):
    """A state that can outgrow msgpack (a sum of storable deltas), snapshotted after every event."""

    class State(msgspec.Struct):
        total: int = 0

    state: State
    snapshot_every = 1

    @handler
    async def add(self, msg: Add) -> None:
        self.emit(Added(msg.n))

    @handler
    async def total(self, msg: Total) -> str:
        return str(self.state.total)

    @apply
    def _added(self, ev: Added) -> None:
        self.state.total += ev.n


async def test_a_state_that_cannot_be_stored_skips_its_snapshot_and_keeps_its_events(
    db: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A snapshot is an optimisation (G5): a state with no msgpack form is not
    # snapshotted, its events are kept, and the journal rebuilds it.
    async with Runtime(db, actors=[Tally]) as rt:
        for n in (BIG, BIG, BIG, -BIG, -BIG):  # the third total, 3 * BIG, has no msgpack form
            await rt.ask("Tally/t", Add(n))
        assert await rt.ask("Tally/t", Total()) == str(BIG)
    with Journal.open(db) as journal:
        assert len(list(journal.entries("Tally/t", kind="event"))) == 5
        steps = [e.seq for e in journal.entries("Tally/t", kind="reply")][:5]  # where each add's step ends
        assert [s.seq for s in journal.snapshots("Tally/t")] == steps[:2] + steps[3:]  # not after the third
    assert f"no snapshot at seq {steps[2]}, its state cannot be stored" in caplog.text
    async with Runtime(db, actors=[Tally]) as rt:  # rebuilt from the snapshot before it and the events
        assert await rt.ask("Tally/t", Total()) == str(BIG)
        await rt.ask("Tally/t", Add(BIG))
        assert await rt.ask("Tally/t", Total()) == str(2 * BIG)


async def test_the_readme_account_survives_a_balance_beyond_64_bits(db: str) -> None:
    # Three deposits of 2**63 - 1: the third balance has no msgpack form. It used
    # to raise while the round built its units, leaving this actor and every
    # actor of that round busy forever.
    async with Runtime(db, actors=[Account]) as rt:
        assert await rt.ask("Account/a", Deposit(BIG)) == BIG
        assert await rt.ask("Account/a", Deposit(BIG)) == 2 * BIG
        with anyio.fail_after(10):
            results = await asyncio.gather(
                rt.ask("Account/a", Deposit(BIG)),  # the same round as the tells below
                *(rt.tell(f"Account/{k}", Deposit(1)) for k in "bcd"),
                return_exceptions=True,
            )
            assert isinstance(results[0], HandlerError)
            assert results[0].type_name == "UnstorableValueError" and "cannot be stored" in str(results[0])
            assert results[1:] == [None, None, None]
            assert [await rt.ask(f"Account/{k}", GetBalance()) for k in "abcd"] == [2 * BIG, 1, 1, 1]
            assert await rt.ask("Account/a", Deposit(1)) == 2 * BIG + 1  # the actor carries on
    async with Runtime(db, actors=[Account]) as rt:  # and the journal rebuilds it
        assert await rt.ask("Account/a", GetBalance()) == 2 * BIG + 1


@pytest.mark.parametrize(
    ("call", "names"),
    [
        (lambda rt: rt.tell(f"Echo/{SURROGATE}", Say("hi")), "actor address"),
        (lambda rt: rt.ask(f"Echo/{SURROGATE}", Say("hi")), "actor address"),
        (lambda rt: rt.tell("Echo/a", Say(SURROGATE)), "Say for Echo/a cannot be stored"),
        (lambda rt: rt.ask("Echo/a", Say("hi"), idempotency_key=SURROGATE), "idempotency key"),
        (lambda rt: rt.tell("Echo/a", Say("hi"), idempotency_key=SURROGATE), "idempotency key"),
        (lambda rt: rt.resolve("Echo/a", SURROGATE, 1), "promise name"),
        (lambda rt: rt.resolve("Echo/a", "p", 2**70), "cannot be stored"),
        (lambda rt: rt.resolve("Echo/a", "p", SURROGATE), "cannot be stored"),
        (lambda rt: rt.annotate(SURROGATE, 1), "annotation key"),
        (lambda rt: rt.annotate("k", 2**63), "SQLite integers hold 64 bits"),
        (lambda rt: rt.annotate("k", SURROGATE), "annotation 'k'"),
    ],
)
async def test_a_value_that_cannot_be_stored_is_refused_at_the_door(db: str, call: object, names: str) -> None:
    async with Runtime(db, actors=[Echo]) as rt:
        await rt.ask("Echo/a", Say("before"))
        before = dump(db)
        with anyio.fail_after(10), pytest.raises(UnstorableValueError, match=names):
            await call(rt)  # type: ignore[operator]
        assert dump(db) == before
        assert await rt.ask("Echo/a", Say("after")) == "after"


@pytest.mark.parametrize(
    ("what", "error", "text"),
    [
        ("reply", HandlerError, "the reply of Echo/a cannot be stored"),
        ("effect", HandlerError, "the result of effect huge cannot be stored"),
        ("tell", HandlerError, "actor address"),
        ("timer", HandlerError, "finite"),
        ("promise", HandlerError, "promise name"),
    ],
)
async def test_a_value_made_inside_a_step_fails_that_step_alone(
    db: str, what: str, error: type[Exception], text: str
) -> None:
    async with Runtime(db, actors=[Echo]) as rt:
        with anyio.fail_after(10):
            with pytest.raises(error, match=text):
                await rt.ask("Echo/a", Compute(what))
            assert await rt.ask("Echo/a", Say("after")) == "after"
    with Journal.open(db) as journal:
        assert [e.decoded()["text"] for e in journal.entries("Echo/a", kind="event")] == ["after"]


async def test_an_effect_error_whose_text_has_no_utf8_form_is_journaled_escaped(db: str) -> None:
    async with Runtime(db, actors=[Echo]) as rt:
        with anyio.fail_after(10):
            assert await rt.ask("Echo/a", Compute("error")) == "cannot say x\\udc80"
            assert await rt.ask("Echo/a", Say("after")) == "after"


async def test_the_writer_survives_a_unit_it_cannot_bind(db: str) -> None:
    # A non-APSW exception while binding a row (an int beyond SQLite's 64 bits)
    # used to leave the write transaction open: every later commit then failed
    # with "cannot start a transaction within a transaction".
    loop = asyncio.get_running_loop()

    def notify(results: list[tuple[Done, list[Outcome]]]) -> None:
        for done, outcomes in results:
            loop.call_soon_threadsafe(done, outcomes)

    store = open_backend(db, notify=notify)
    try:
        outcomes: list[Outcome] = []
        for value in (2**63, SURROGATE, "fine"):
            future: asyncio.Future[list[Outcome]] = loop.create_future()
            store.submit([Unit(ops=[PutMeta("k", value)])], functools.partial(_set, future))
            with anyio.fail_after(10):
                outcomes.append((await future)[0])
        assert isinstance(outcomes[0], Unstorable) and isinstance(outcomes[1], Unstorable)
        assert outcomes[2] is None
        assert store.meta("k") == "fine"
    finally:
        store.close()


def _set(future: asyncio.Future[list[Outcome]], outcomes: list[Outcome]) -> None:
    future.set_result(outcomes)
