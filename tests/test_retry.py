"""Effect retry policies: attempts journaled, backoff durable across a crash,
the last error reaching the handler; hours of backoff on a virtual clock."""

from __future__ import annotations

import anyio
import msgspec
import pytest

from actors import Actor, Retry, handler
from runtime import Registry, Runtime, VirtualClock, replay
from storage import Journal

from .conftest import BACKENDS


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every test here runs on a SQLite file and on a PostgreSQL database (``db`` makes either)."""
    return str(request.param)


class Call(msgspec.Struct):
    failures: int


class Flaky:
    calls = 0
    failures = 0

    @classmethod
    def reset(cls, failures: int) -> None:
        cls.calls, cls.failures = 0, failures


async def llm_call(prompt: str) -> str:
    Flaky.calls += 1
    if Flaky.calls <= Flaky.failures:
        raise ConnectionError(f"rate limited (call {Flaky.calls})")
    return prompt.upper()


async def hang() -> str:
    await anyio.sleep(60)
    return "never"


POLICY = Retry(max_attempts=4, initial=600.0, multiplier=2.0, max_delay=3600.0, jitter=0.0)


class Caller(Actor):
    @handler
    async def call(self, msg: Call) -> str:
        try:
            return await self.ctx.effect(llm_call, "hello", retry=POLICY)
        except Exception as exc:
            return f"gave up: {exc}"


class Hung(msgspec.Struct):
    pass


class Timer(Actor):
    @handler
    async def hung(self, msg: Hung) -> str:
        try:
            return await self.ctx.effect(hang, retry=Retry(max_attempts=2, initial=0.0), timeout=0.05)
        except Exception as exc:
            return f"gave up: {exc}"


def kinds(db: str, address: str) -> list[str]:
    with Journal.open(db) as journal:
        return [e.kind for e in journal.entries(address)]


async def advance_until(clock: VirtualClock, done: object, step: float = 60.0, limit: int = 500) -> None:
    for _ in range(limit):
        if done():  # type: ignore[operator]
            return
        clock.advance(step)
        await anyio.sleep(0.001)
    raise AssertionError("the condition was never reached")


async def test_attempts_are_journaled_and_backoff_runs_on_the_virtual_clock(db: str) -> None:
    Flaky.reset(failures=2)
    clock = VirtualClock()
    start = clock()
    async with Runtime(db, actors=[Caller], clock=clock) as rt, anyio.create_task_group() as tg:
        result: list[str] = []
        tg.start_soon(lambda: _ask_into(rt, result))
        await advance_until(clock, lambda: bool(result))
    assert result == ["HELLO"] and Flaky.calls == 3
    assert kinds(db, "Caller/c") == ["message", "attempt", "attempt", "effect", "reply"]
    assert clock() - start >= 600 + 1200  # two backoffs, never shortened
    with Journal.open(db) as journal:
        assert replay(journal, Registry([Caller])).ok


async def _ask_into(rt: Runtime, out: list[str]) -> None:
    out.append(await rt.ask("Caller/c", Call(0)))


async def test_after_the_last_attempt_the_error_reaches_the_handler(db: str) -> None:
    Flaky.reset(failures=100)
    clock = VirtualClock()
    async with Runtime(db, actors=[Caller], clock=clock) as rt, anyio.create_task_group() as tg:
        result: list[str] = []
        tg.start_soon(lambda: _ask_into(rt, result))
        await advance_until(clock, lambda: bool(result))
    assert result == ["gave up: ConnectionError: rate limited (call 4)"]
    assert Flaky.calls == 4


async def test_a_crash_during_backoff_neither_restarts_the_count_nor_shortens_the_wait(db: str) -> None:
    Flaky.reset(failures=100)
    clock = VirtualClock()
    rt = await Runtime(db, actors=[Caller], clock=clock).__aenter__()
    async with anyio.create_task_group() as tg:
        tg.start_soon(rt.tell, "Caller/c", Call(0))
        await advance_until(clock, lambda: Flaky.calls == 2, step=60.0)  # two attempts made
        with anyio.fail_after(30):  # and the second journaled (the clock stands still: no third starts)
            while kinds(db, "Caller/c").count("attempt") < 2:
                await anyio.sleep(0.01)
        await rt.abandon()  # crash while waiting for the third
        tg.cancel_scope.cancel()
    assert kinds(db, "Caller/c").count("attempt") == 2
    resumed_at = clock()
    async with Runtime(db, actors=[Caller], clock=clock):
        await anyio.sleep(0.05)
        assert Flaky.calls == 2  # the wait was not cut short by the restart
        await advance_until(clock, lambda: "reply" in kinds(db, "Caller/c"))
    assert Flaky.calls == 4  # attempts 3 and 4 only: the count went on
    assert clock() - resumed_at >= 1200 - 60


async def test_each_attempt_is_bounded_by_the_timeout(db: str) -> None:
    async with Runtime(db, actors=[Timer]) as rt:
        with anyio.fail_after(5):
            reply = await rt.ask("Timer/t", Hung())
    assert reply == "gave up: TimeoutError: effect hang took longer than 0.05 s"
    assert kinds(db, "Timer/t") == ["message", "attempt", "effect", "reply"]


def test_a_bad_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Retry(max_attempts=0)
