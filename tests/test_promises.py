"""Promises: waiting durably for the outside world (a human, a webhook)."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import msgspec
import pytest

from actors import Actor, PromiseError, UnknownActorTypeError, apply, handler
from runtime import Registry, Runtime, replay
from storage import Journal

from .conftest import BACKENDS, dump, query


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every test here runs on a SQLite file and on a PostgreSQL database (``db`` makes either)."""
    return str(request.param)


class Draft(msgspec.Struct):
    text: str
    timeout: float | None = None


class Approved(msgspec.Struct):
    text: str
    by: str


class Publisher(Actor):
    class State(msgspec.Struct):
        published: list[str] = msgspec.field(default_factory=list)

    state: State

    @handler
    async def draft(self, msg: Draft) -> str:
        try:
            decision = await self.ctx.promise(f"approve:{msg.text}", timeout=msg.timeout)
        except PromiseError as exc:
            return f"not approved: {exc}"
        self.emit(Approved(msg.text, decision["by"]))
        return f"published by {decision['by']}"

    @apply
    def _approved(self, ev: Approved) -> None:
        self.state.published.append(ev.text)


async def wait_for_waiter(rt: Runtime, name: str) -> None:
    with anyio.fail_after(5):
        while ("Publisher/p", name) not in rt.statistics().waiting_promises:
            await anyio.sleep(0.005)


async def test_a_handler_waits_for_a_human_and_gets_the_value_once(db: str) -> None:
    async with Runtime(db, actors=[Publisher]) as rt:
        replies: list[str] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: _ask(rt, Draft("post"), replies))
            await wait_for_waiter(rt, "approve:post")
            await rt.resolve("Publisher/p", "approve:post", {"by": "ada"})
        assert replies == ["published by ada"]
        await rt.resolve("Publisher/p", "approve:other", {"by": "x"})
        with pytest.raises(PromiseError, match="already resolved"):
            await rt.resolve("Publisher/p", "approve:other", {"by": "y"})
    with Journal.open(db) as journal:
        entries = [(e.kind, e.type) for e in journal.entries("Publisher/p")]
        assert ("effect", "promise:approve:post") in entries
        assert replay(journal, Registry([Publisher])).ok
    assert [row[1] for row in _promises(db)] == ["approve:other"]  # resolved, not yet taken


async def _ask(rt: Runtime, msg: Draft, out: list[str]) -> None:
    out.append(await rt.ask("Publisher/p", msg))


def _promises(db: str) -> list[tuple[Any, ...]]:
    return query(db, "SELECT address, name FROM promises ORDER BY name")


async def test_a_value_resolved_while_the_handler_looks_for_it_is_not_lost(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The lost wake-up behind the actor-to-actor ask machine's AskTimeoutError:
    # the value commits after the handler's journal read and before it waits.
    async with Runtime(db, actors=[Publisher]) as rt:
        read, resolved = threading.Event(), threading.Event()
        real = rt.store.promise

        def slow_read(address: str, name: str) -> bytes | None:
            found = real(address, name)  # nothing there yet
            read.set()
            resolved.wait(5)  # the value commits meanwhile
            return found

        monkeypatch.setattr(rt.store, "promise", slow_read)
        replies: list[str] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(_ask, rt, Draft("race", timeout=5), replies)
            await anyio.to_thread.run_sync(read.wait, 5)
            await rt.resolve("Publisher/p", "approve:race", {"by": "ada"})
            resolved.set()
    assert replies == ["published by ada"]


async def test_a_value_resolved_before_the_handler_waits_is_kept(db: str) -> None:
    async with Runtime(db, actors=[Publisher]) as rt:
        await rt.resolve("Publisher/p", "approve:early", {"by": "bob"})
        assert await rt.ask("Publisher/p", Draft("early")) == "published by bob"
    assert _promises(db) == []


async def test_a_waiting_step_survives_a_crash_and_takes_the_value_after_restart(db: str) -> None:
    rt = await Runtime(db, actors=[Publisher]).__aenter__()
    await rt.tell("Publisher/p", Draft("late"))
    await wait_for_waiter(rt, "approve:late")
    await rt.abandon()
    async with Runtime(db, actors=[Publisher]) as rt2:
        await wait_for_waiter(rt2, "approve:late")  # the step resumed and waits again
        await rt2.resolve("Publisher/p", "approve:late", {"by": "cy"})
        with anyio.fail_after(5):
            while True:
                with Journal.open(db) as journal:
                    if journal.pending() == []:
                        break
                await anyio.sleep(0.01)
    with Journal.open(db) as journal:
        replies = [e.decoded()["value"] for e in journal.entries("Publisher/p", kind="reply")]
        promised = [e for e in journal.entries("Publisher/p") if e.type == "promise:approve:late"]
    assert replies == ["published by cy"] and len(promised) == 1


async def test_closing_does_not_wait_out_the_grace_for_a_step_waiting_on_a_promise(db: str) -> None:
    # A step waiting for a promise (or an ask's reply) resumes from the journal at the next start:
    # closing has nothing to wait for. It used to wait the whole grace, with any agent waiting for
    # a human: every `serve` took the grace (5 s by default) to stop.
    rt = await Runtime(db, actors=[Publisher], grace=30).__aenter__()
    await rt.tell("Publisher/p", Draft("later"))
    await wait_for_waiter(rt, "approve:later")
    started = anyio.current_time()
    await rt.close()
    assert anyio.current_time() - started < 30  # it did not wait out the grace (a bound, not a speed)
    async with Runtime(db, actors=[Publisher]) as rt2:  # and it waits again after the start
        await wait_for_waiter(rt2, "approve:later")
        await rt2.resolve("Publisher/p", "approve:later", {"by": "di"})
        with anyio.fail_after(10):
            while query(db, "SELECT count(*) FROM inbox") != [(0,)]:
                await anyio.sleep(0.01)
    with Journal.open(db) as journal:
        replies = [e.decoded()["value"] for e in journal.entries("Publisher/p", kind="reply")]
    assert replies == ["published by di"]


async def test_a_promise_times_out_into_the_handler(db: str) -> None:
    async with Runtime(db, actors=[Publisher]) as rt:
        reply = await rt.ask("Publisher/p", Draft("never", timeout=0.05))
    assert reply == "not approved: no value for promise 'approve:never' within 0.05 s"


async def test_bad_resolutions_are_refused_and_change_nothing(db: str) -> None:
    async with Runtime(db, actors=[Publisher]) as rt:
        await rt.resolve("Publisher/p", "x", 1)
        before = dump(db)
        with pytest.raises(UnknownActorTypeError):
            await rt.resolve("Nobody/p", "x", 1)
        with pytest.raises(PromiseError, match="already resolved"):
            await rt.resolve("Publisher/p", "x", 2)
        assert dump(db) == before
