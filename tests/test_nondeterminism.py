"""G6: a handler changed between a crash and the restart is caught, not continued."""

from __future__ import annotations

import anyio
import msgspec
import pytest

from actors import Actor, ActorSuspendedError, NonDeterminismError, SteleError, handler
from runtime import Runtime
from storage import Journal

from .conftest import BACKENDS
from .models import Account, Deposit, GetBalance


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every test here runs on a SQLite file and on a PostgreSQL database (``db`` makes either)."""
    return str(request.param)


class Plan(msgspec.Struct):
    topic: str


class Blocker:
    release = anyio.Event()


async def search(topic: str) -> str:
    return f"results for {topic}"


async def summarise(text: str) -> str:
    await Blocker.release.wait()
    return text.upper()


async def translate(topic: str) -> str:
    return topic[::-1]


class AgentV1(Actor):
    name = "Agent"

    @handler
    async def plan(self, msg: Plan) -> str:
        found = await self.ctx.effect(search, msg.topic)
        return await self.ctx.effect(summarise, found)


class AgentV2(Actor):
    """The same agent after a code change that reorders its effects."""

    name = "Agent"

    @handler
    async def plan(self, msg: Plan) -> str:
        first = await self.ctx.effect(translate, msg.topic)
        return await self.ctx.effect(summarise, first)


async def suspended(db: str, address: str) -> None:
    """Wait (5 s at most) until the journal records ``address`` as suspended."""
    with anyio.fail_after(5):
        while Journal.open(db).actor(address).status != "suspended":  # type: ignore[union-attr]
            await anyio.sleep(0.005)


async def crash_mid_step(db: str) -> None:
    Blocker.release = anyio.Event()
    rt = await Runtime(db, actors=[AgentV1, Account]).__aenter__()
    await rt.tell("Agent/a", Plan("llamas"))
    with anyio.fail_after(5):
        while [e.kind for e in Journal.open(db).entries("Agent/a")] != ["message", "effect"]:
            await anyio.sleep(0.005)
    await rt.abandon()


async def test_changed_effects_suspend_the_actor_and_name_the_divergence(db: str) -> None:
    await crash_mid_step(db)
    Blocker.release.set()
    async with Runtime(db, actors=[AgentV2, Account]) as rt:
        await suspended(db, "Agent/a")
        # Asks fail at once with the reason; tells are accepted and kept.
        with pytest.raises(ActorSuspendedError, match="non-determinism in Agent/a"):
            await rt.ask("Agent/a", Plan("x"))
        await rt.tell("Agent/a", Plan("later"))
        # Other actors carry on.
        await rt.tell("Account/b", Deposit(4))
        assert await rt.ask("Account/b", GetBalance()) == 4
    with Journal.open(db) as journal:
        info = journal.actor("Agent/a")
        assert info is not None and info.status == "suspended"
        assert info.reason is not None
        effect = next(e for e in journal.entries("Agent/a") if e.kind == "effect")
        assert f"at journal position {effect.position}" in info.reason
        assert "effect #0 search" in info.reason
        assert "effect #0 translate" in info.reason
        # Nothing was consumed: both messages wait for a fixed version.
        assert [p.target for p in journal.pending()] == ["Agent/a", "Agent/a"]
        assert [e.kind for e in journal.entries("Agent/a")] == ["message", "effect"]


async def test_the_unchanged_handler_resumes_from_its_journal(db: str) -> None:
    await crash_mid_step(db)
    Blocker.release.set()
    async with Runtime(db, actors=[AgentV1, Account]) as rt:
        with anyio.fail_after(5):
            while Journal.open(db).pending():
                await anyio.sleep(0.005)
        assert rt is not None
    with Journal.open(db) as journal:
        assert [e.kind for e in journal.entries("Agent/a")] == ["message", "effect", "effect", "reply"]
        reply = next(e for e in journal.entries("Agent/a") if e.kind == "reply").decoded()
        assert reply["value"] == "RESULTS FOR LLAMAS"


def test_non_determinism_error_names_actor_position_recorded_and_current() -> None:
    error = NonDeterminismError("Agent/a", 7, "effect #0 x", "effect #0 y")
    assert all(part in str(error) for part in ("Agent/a", "position 7", "recorded effect #0 x", "effect #0 y"))


async def test_a_suspended_actor_resumes_after_a_code_fix(db: str) -> None:
    await crash_mid_step(db)
    Blocker.release.set()
    async with Runtime(db, actors=[AgentV2, Account]) as rt:
        await suspended(db, "Agent/a")
        await rt.tell("Agent/a", Plan("later"))
    async with Runtime(db, actors=[AgentV1, Account]) as rt:  # the fixed code
        with pytest.raises(ActorSuspendedError):  # still suspended: a person decides
            await rt.ask("Agent/a", Plan("x"))
        await rt.resume("Agent/a")
        assert await rt.ask("Agent/a", Plan("now"), timeout=10) == "RESULTS FOR NOW"
        with pytest.raises(SteleError, match="is not suspended"):
            await rt.resume("Agent/a")
    with Journal.open(db) as journal:
        info = journal.actor("Agent/a")
        assert info is not None and info.status == "active" and info.reason is None
        replies = [e.decoded()["value"] for e in journal.entries("Agent/a", kind="reply")]
        assert replies == ["RESULTS FOR LLAMAS", "RESULTS FOR LATER", "RESULTS FOR NOW"]
        assert journal.pending() == []
