"""Idempotent ingress: a repeated key returns the first outcome and enqueues nothing."""

from __future__ import annotations

import anyio
import pytest

from actors import HandlerError, MessageValidationError, ReplyUnavailableError
from runtime import Runtime
from storage import Journal

from .conftest import BACKENDS
from .models import Account, Deposit, GetBalance, Withdraw
from .routing import Asker, Wait, Waiter
from .test_recovery import Gate, Work, Worker, wait_for


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every test here runs on a SQLite file and on a PostgreSQL database (``db`` makes either)."""
    return str(request.param)


def events(db: str, address: str) -> int:
    with Journal.open(db) as journal:
        return len(list(journal.entries(address, kind="event")))


async def test_a_repeated_tell_is_accepted_once(db: str) -> None:
    async with Runtime(db, actors=[Account]) as rt:
        for _ in range(3):
            await rt.tell("Account/a", Deposit(5), idempotency_key="pay-1")
        assert await rt.ask("Account/a", GetBalance()) == 5
    assert events(db, "Account/a") == 1


async def test_a_repeated_ask_gets_the_first_reply_even_after_a_restart(db: str) -> None:
    async with Runtime(db, actors=[Account]) as rt:
        assert await rt.ask("Account/a", Deposit(5), idempotency_key="k") == 5
        assert await rt.ask("Account/a", Deposit(5), idempotency_key="k") == 5
        assert await rt.ask("Account/a", Deposit(1)) == 6
    async with Runtime(db, actors=[Account]) as rt:
        assert await rt.ask("Account/a", Deposit(5), idempotency_key="k") == 5
        with pytest.raises(HandlerError, match="insufficient funds"):
            await rt.ask("Account/a", Withdraw(100), idempotency_key="w")
        with pytest.raises(HandlerError, match="insufficient funds"):  # the same error, not a new attempt
            await rt.ask("Account/a", Withdraw(100), idempotency_key="w")
    assert events(db, "Account/a") == 2


async def test_concurrent_calls_with_one_key_run_once(db: str) -> None:
    replies: list[int] = []
    async with Runtime(db, actors=[Account]) as rt:

        async def call() -> None:
            replies.append(await rt.ask("Account/a", Deposit(3), idempotency_key="same"))

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(call)
    assert replies == [3] * 10
    assert events(db, "Account/a") == 1


async def test_keys_expire_after_the_retention(db: str) -> None:
    now = [1_000_000.0]
    async with Runtime(db, actors=[Account], clock=lambda: now[0], idempotency_retention_s=60) as rt:
        await rt.ask("Account/a", Deposit(2), idempotency_key="k")
        now[0] += 30
        assert await rt.ask("Account/a", Deposit(2), idempotency_key="k") == 2
        now[0] += 61
        assert await rt.ask("Account/a", Deposit(2), idempotency_key="k") == 4  # a new call
    assert events(db, "Account/a") == 2


async def test_a_key_belongs_to_one_address(db: str) -> None:
    async with Runtime(db, actors=[Account]) as rt:
        await rt.tell("Account/a", Deposit(1), idempotency_key="k")
        with pytest.raises(MessageValidationError, match="first used for Account/a"):
            await rt.tell("Account/b", Deposit(1), idempotency_key="k")


async def test_a_retried_ask_waits_for_its_interrupted_step(db: str) -> None:
    Gate.reset()
    rt = await Runtime(db, actors=[Worker]).__aenter__()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: rt.ask("Worker/w", Work(1), idempotency_key="job-1"))
        await wait_for(lambda: len(Gate.calls) == 2)  # durable, first effect journaled, second running
        await rt.abandon()
        tg.cancel_scope.cancel()
    Gate.open.set()
    async with Runtime(db, actors=[Worker]) as rt2:
        assert await rt2.ask("Worker/w", Work(1), idempotency_key="job-1", timeout=10) == [1]
        assert await rt2.ask("Worker/w", Work(1), idempotency_key="job-1", timeout=10) == [1]
    assert [name for name, _ in Gate.calls].count("first") == 1  # journaled once, never again
    assert events(db, "Worker/w") == 1


@pytest.mark.parametrize("key", ["timer:x", "reply:Asker/a/2/0|Asker/a"])
async def test_a_client_key_shaped_like_an_internal_marker_is_only_a_key(db: str, key: str) -> None:
    # Version 5 kept timers and actors' asks as markers in the client key column:
    # after a restart "timer:x" failed every start, and "reply:…|Asker/a" made
    # this ask's reply resolve Asker/a's promise (a forged reply).
    rt = await Runtime(db, actors=[Asker, Waiter]).__aenter__()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: rt.ask("Waiter/u", Wait("p"), idempotency_key=key))
        await wait_for(lambda: ("Waiter/u", "p") in rt.statistics().waiting_promises)  # durable, waiting
        await rt.abandon()
        tg.cancel_scope.cancel()
    async with Runtime(db, actors=[Asker, Waiter]) as rt2:
        await rt2.resolve("Waiter/u", "p", "value")
        assert await rt2.ask("Waiter/u", Wait("p"), idempotency_key=key, timeout=10) == "value"
    with Journal.open(db) as journal:
        assert journal.pending() == []
        assert journal.promise("Asker/a", "reply:Asker/a/2/0") is None


async def test_a_key_is_not_reused_across_a_tell_and_an_ask(db: str) -> None:
    # An ask reusing a tell's key used to poll forever for a reply no tell has.
    async with Runtime(db, actors=[Account]) as rt:
        await rt.tell("Account/a", Deposit(1), idempotency_key="t")
        await rt.ask("Account/a", Deposit(2), idempotency_key="a")
        with anyio.fail_after(10):
            with pytest.raises(MessageValidationError, match="first used for a tell to Account/a; an ask cannot"):
                await rt.ask("Account/a", Deposit(1), idempotency_key="t")
            with pytest.raises(MessageValidationError, match="first used for an ask to Account/a; a tell cannot"):
                await rt.tell("Account/a", Deposit(2), idempotency_key="a")
        assert await rt.ask("Account/a", GetBalance()) == 3


async def test_an_ask_under_the_key_of_a_dead_letter_gets_its_error(db: str) -> None:
    # The key of an ask that became a dead letter had no reply recorded: a
    # repeated ask under it polled forever.
    Gate.reset()
    rt = await Runtime(db, actors=[Worker], max_attempts=1).__aenter__()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: rt.ask("Worker/w", Work(1), idempotency_key="job"))
        await wait_for(lambda: len(Gate.calls) == 2)  # durable; the process dies in its second effect
        await rt.abandon()
        tg.cancel_scope.cancel()
    rt = await Runtime(db, actors=[Worker], max_attempts=1).__aenter__()
    await wait_for(lambda: len(Gate.calls) == 3)  # attempt 1, counted; dies again
    await rt.abandon()
    async with Runtime(db, actors=[Worker], max_attempts=1) as rt2:
        with anyio.fail_after(10):
            while not await rt2.dead_letters():
                await anyio.sleep(0.01)
            with pytest.raises(HandlerError, match="became a dead letter"):
                await rt2.ask("Worker/w", Work(1), idempotency_key="job")


async def test_closing_answers_every_wait_for_a_step_that_does_not_finish(db: str) -> None:
    # A durable ask stuck in its effect beyond the grace, and a repeated ask
    # under its key: both are told the message is accepted and runs after the
    # next start (never that it was refused, which would invite a resend).
    Gate.reset()
    rt = await Runtime(db, actors=[Worker], grace=0.2).__aenter__()
    outcomes: list[BaseException] = []

    async def ask() -> None:
        try:
            await rt.ask("Worker/w", Work(1), idempotency_key="job")
        except ReplyUnavailableError as exc:
            outcomes.append(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(ask)
            await wait_for(lambda: len(Gate.calls) == 2)
            tg.start_soon(ask)
            await anyio.sleep(0.05)
            await rt.close()
    assert len(outcomes) == 2
    Gate.open.set()
    async with Runtime(db, actors=[Worker]) as rt2:
        assert await rt2.ask("Worker/w", Work(1), idempotency_key="job", timeout=10) == [1]


async def test_a_first_caller_that_gives_up_leaves_the_others_their_reply(db: str) -> None:
    Gate.reset()
    async with Runtime(db, actors=[Worker]) as rt:
        replies: list[list[int]] = []

        async def patient() -> None:
            replies.append(await rt.ask("Worker/w", Work(1), idempotency_key="job"))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                with anyio.move_on_after(0.2):  # the first caller gives up
                    await rt.ask("Worker/w", Work(1), idempotency_key="job")
                tg.start_soon(patient)
                tg.start_soon(patient)
                await anyio.sleep(0.05)
                Gate.open.set()
        assert replies == [[1], [1]]
    assert events(db, "Worker/w") == 1


async def test_a_key_is_not_reused_for_another_handler(db: str) -> None:
    # A repeated ask under a key first used for another handler of the same
    # actor used to get that handler's reply, decoded as its own reply type.
    async with Runtime(db, actors=[Account]) as rt:
        assert await rt.ask("Account/a", Deposit(5), idempotency_key="k") == 5
        with pytest.raises(MessageValidationError, match="handler 'deposit' of Account/a, not 'balance'"):
            await rt.ask("Account/a", GetBalance(), idempotency_key="k")
        assert await rt.ask("Account/a", Deposit(5), idempotency_key="k") == 5
