"""Fork: a new actor from another's state at a position; effects reused while the fork matches its source."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import ClassVar

import anyio
import msgspec
import pytest

from actors import Actor, ForkError, OutsideRetentionError, apply, handler
from runtime import Registry, Runtime, load, replay
from runtime._diff import diff
from runtime._records import effect_decoder, fork_decoder
from storage import EntryKind, Journal

from .conftest import BACKENDS
from .models import Account, Deposit
from .s3server import S3Server
from .served import cli


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each test that takes ``db`` runs on a file and on a PostgreSQL database."""
    return str(request.param)

class Ask(msgspec.Struct):
    prompt: str


class Answered(msgspec.Struct):
    prompt: str
    answer: str
    draw: float
    at: float


class Model:
    """The side effect: a call to a model, counted."""

    calls: list[str] = []
    changed_from = 10**9
    """The code change: prompts numbered from here on are asked differently."""


def call_model(prompt: str) -> str:
    Model.calls.append(prompt)
    return f"answer to {prompt}"


def lookup(prompt: str) -> int:
    Model.calls.append(f"lookup {prompt}")
    return len(prompt)


class Agent(Actor):
    class State(msgspec.Struct):
        log: list[str] = msgspec.field(default_factory=list)
        draws: list[tuple[float, float]] = msgspec.field(default_factory=list)

    state: State
    snapshot_every = 4

    @handler
    async def ask(self, msg: Ask) -> str:
        number = int(msg.prompt.rpartition(" ")[2])
        asked = msg.prompt if number < Model.changed_from else f"{msg.prompt} (rephrased)"
        answer = await self.ctx.effect(call_model, asked)
        size = await self.ctx.effect(lookup, asked)
        # The seed and time of the step are the source's while the fork matches it.
        self.emit(Answered(msg.prompt, f"{answer} ({size})", self.ctx.random(), self.ctx.now()))
        return answer

    @apply
    def _answered(self, ev: Answered) -> None:
        self.state.log.append(ev.answer)
        self.state.draws.append((ev.draw, ev.at))


def positions(db: str, address: str) -> list[int]:
    return [e.position for e in Journal.open(db).entries(address)]


def state_at(db: str, cls: type[Actor], address: str, position: int | None = None) -> object:
    """What `python -m runtime state ADDRESS --at POSITION` shows."""
    registry = Registry([cls])
    desc, key = registry.resolve(address)
    with Journal.open(db) as journal:
        seq = journal.seq_at(address, position) if position is not None else None
        return load(journal, desc, registry.codec, address, key, until_seq=seq).instance.state


async def talk(rt: Runtime, address: str, count: int) -> None:
    for i in range(count):
        await rt.ask(address, Ask(f"question {i}"))


async def test_a_fork_has_its_sources_state_at_every_position(db: str) -> None:
    async with Runtime(db, actors=[Account]) as rt:
        for amount in range(1, 13):  # snapshots every 5 events: forks start from snapshots and from events
            await rt.tell("Account/a", Deposit(amount))
        await rt.ask("Account/a", Deposit(100))
        every = positions(db, "Account/a")
        for n, position in enumerate(every):
            await rt.fork("Account/a", at=position, to=f"Account/f{n}")
        for n, position in enumerate(every):
            assert state_at(db, Account, f"Account/f{n}") == state_at(db, Account, "Account/a", position)
        # The fork is a live actor: it goes on from there, and the source is untouched.
        before = state_at(db, Account, "Account/a")
        assert await rt.ask("Account/f3", Deposit(1000)) == state_at(db, Account, "Account/f3").balance  # type: ignore[attr-defined]
        assert state_at(db, Account, "Account/a") == before
    # Its history says where it came from, and begins there.
    with Journal.open(db) as journal:
        first = next(iter(journal.entries("Account/f3")))
        assert first.kind == EntryKind.FORK and first.seq == 1
        record = fork_decoder.decode(first.data)
        assert (record.source, record.position, record.replay_after) == ("Account/a", every[3], False)
        assert record.seq == journal.seq_at("Account/a", every[3])
        with pytest.raises(OutsideRetentionError):  # before the fork began: no state is made up
            journal.seq_at("Account/f3", first.position - 1)
    # And it survives a restart.
    async with Runtime(db, actors=[Account]) as rt:
        assert await rt.ask("Account/f3", Deposit(1)) == state_at(db, Account, "Account/f3").balance  # type: ignore[attr-defined]
        assert replay(Journal.open(db), Registry([Account])).ok
    # `check` decodes a fork's first entry as its own kind.
    checked = json.loads(cli("check", "--db", db, "--module", "tests.models", "--json").stdout)
    assert checked["ok"] and checked["problems"] == []


async def test_a_fork_without_a_position_starts_from_the_latest_state(db: str) -> None:
    async with Runtime(db, actors=[Account]) as rt:
        for amount in (5, 6, 7):
            await rt.tell("Account/a", Deposit(amount))
        await rt.ask("Account/a", Deposit(1))
        report = await rt.fork("Account/a", to="Account/b")
        assert report.position == positions(db, "Account/a")[-1]
        assert state_at(db, Account, "Account/b") == state_at(db, Account, "Account/a")


async def test_a_fork_cannot_take_an_address_with_history_or_of_another_type(db: str) -> None:
    async with Runtime(db, actors=[Account, Agent]) as rt:
        await rt.ask("Account/a", Deposit(5))
        await rt.ask("Account/b", Deposit(6))
        with pytest.raises(ForkError, match="already exists"):
            await rt.fork("Account/a", to="Account/b")
        with pytest.raises(ForkError, match="must be a Account too"):
            await rt.fork("Account/a", to="Agent/x")
        with pytest.raises(ForkError, match="new address"):
            await rt.fork("Account/a", to="Account/a")
        with pytest.raises(ForkError, match="no history"):
            await rt.fork("Account/nobody", to="Account/c")
        # Nothing was written, and the refused addresses are usable.
        assert state_at(db, Account, "Account/b").balance == 6  # type: ignore[attr-defined]
        assert Journal.open(db).actor("Account/c") is None
        await rt.fork("Account/a", to="Account/c")
        assert state_at(db, Account, "Account/c").balance == 5  # type: ignore[attr-defined]


async def test_replay_after_with_unchanged_code_reuses_every_effect(db: str) -> None:
    Model.calls, Model.changed_from = [], 10**9
    async with Runtime(db, actors=[Agent]) as rt:
        await talk(rt, "Agent/src", 10)
        at = positions(db, "Agent/src")
        fork_at = at[3 * 5 + 1]  # inside the 4th step, before its event: it is delivered again
        source_calls = list(Model.calls)
        report = await rt.fork("Agent/src", at=fork_at, to="Agent/copy", replay_after=True)
        assert Model.calls == source_calls  # no effect ran again
        assert (report.redelivered, report.reused, report.ran, report.divergence) == (7, 14, 0, None)
        assert state_at(db, Agent, "Agent/copy") == state_at(db, Agent, "Agent/src")
    with Journal.open(db) as journal:
        effects = [e for e in journal.entries("Agent/copy") if e.kind == EntryKind.EFFECT]
        sources = {e.position: e for e in journal.entries("Agent/src") if e.kind == EntryKind.EFFECT}
        assert len(effects) == 14
        for effect in effects:
            record = effect_decoder.decode(effect.data)
            assert record.reused in sources  # marked, naming the source's entry it reused
            assert effect_decoder.decode(sources[record.reused].data).result == record.result
    assert replay(Journal.open(db), Registry([Agent])).ok


async def test_replay_after_with_changed_code_runs_effects_from_the_divergence_on(db: str) -> None:
    Model.calls, Model.changed_from = [], 10**9
    async with Runtime(db, actors=[Agent]) as rt:
        await talk(rt, "Agent/src", 8)
        source_calls = list(Model.calls)
        Model.changed_from = 5  # the fixed code asks from question 5 on in other words
        fork_at = positions(db, "Agent/src")[2 * 5 + 4]  # the 3rd step's reply
        report = await rt.fork("Agent/src", at=fork_at, to="Agent/fixed", replay_after=True)
        # Steps 3 and 4 reused both their effects; from step 5 on, both ran for real.
        assert Model.calls[len(source_calls) :] == [
            f"{what}question {i} (rephrased)" for i in (5, 6, 7) for what in ("", "lookup ")
        ]
        assert (report.redelivered, report.reused, report.ran) == (5, 4, 6)
        assert report.divergence is not None and "other arguments" in report.divergence
        source_entries = Journal.open(db).entries("Agent/src")
        assert report.diverged_at == [e for e in source_entries if e.kind == EntryKind.EFFECT][10].position
        fixed = state_at(db, Agent, "Agent/fixed")
        assert fixed.log[:5] == state_at(db, Agent, "Agent/src").log[:5]  # type: ignore[attr-defined]
        assert fixed.log[5] == "answer to question 5 (rephrased) (22)"  # type: ignore[attr-defined]
    reused = [
        effect_decoder.decode(e.data).reused
        for e in Journal.open(db).entries("Agent/fixed")
        if e.kind == EntryKind.EFFECT
    ]
    assert [bool(r) for r in reused] == [True] * 4 + [False] * 6


async def test_diff_compares_a_fork_with_its_source_step_by_step(db: str) -> None:
    Model.calls, Model.changed_from = [], 10**9
    async with Runtime(db, actors=[Agent]) as rt:
        await talk(rt, "Agent/src", 6)
        at = positions(db, "Agent/src")[1 * 5 + 4]  # the 2nd step's reply
        await rt.fork("Agent/src", at=at, to="Agent/same", replay_after=True)
        Model.changed_from = 4
        await rt.fork("Agent/src", at=at, to="Agent/fixed", replay_after=True)
    with Journal.open(db) as journal:
        same = diff(journal, "Agent/src", journal, "Agent/same")
        assert same.same and len(same.steps) == 4 and same.left_from == at and same.right_from == -1
        fixed = diff(journal, "Agent/src", journal, "Agent/fixed")
        # Steps 3 and 4 of the source are the fork's first two; its third (question 4) asked otherwise.
        assert [s.difference is None for s in fixed.steps] == [True, True, False, False]
        first = fixed.first
        assert first is not None and first.handler == "ask" and first.difference is not None
        assert first.left_position == positions(db, "Agent/src")[4 * 5]
        assert "effect 'call_model'" in first.difference.left  # the model's answer differs
        assert diff(journal, "Agent/same", journal, "Agent/src").same  # either way round
        # Two forks of one source (neither is the other's) are compared from their beginnings.
        siblings = diff(journal, "Agent/same", journal, "Agent/fixed")
        assert siblings.left_from == siblings.right_from == -1
        assert [s.difference is None for s in siblings.steps] == [True, True, False, False]
    done = cli("diff", "Agent/src", "Agent/fixed", "--db", db, "--json", check=False)
    assert done.returncode == 1
    assert [s["difference"] is None for s in json.loads(done.stdout)["steps"]] == [True, True, False, False]
    assert cli("diff", "Agent/src", "Agent/same", "--db", db).returncode == 0


def test_fork_from_a_point_in_time_of_a_replica(db_file: str, s3: S3Server, tmp_path: Path) -> None:
    url = s3.url(s3.bucket())

    async def source() -> tuple[datetime.datetime, int]:
        async with Runtime(db_file, actors=[Agent], replicate=url, durability="replicated") as rt:
            await talk(rt, "Agent/src", 3)
            await anyio.sleep(1.2)  # the next replica file carries a later timestamp
            between = datetime.datetime.now(datetime.UTC)
            await anyio.sleep(1.2)
            for i in range(3, 6):
                await rt.ask("Agent/src", Ask(f"question {i}"), durability="replicated")
        return between, positions(db_file, "Agent/src")[0 * 5 + 4]

    Model.changed_from = 10**9
    between, first_reply = anyio.run(source)
    live = str(tmp_path / "other.db")  # the fork goes into another journal: the source's is not touched
    done = cli(
        "fork", "Agent/src", "--as", "Agent/then", "--from", url, "--timestamp", between.isoformat(),
        "--module", "tests.test_fork", "--db", live, "--json",
    )  # fmt: skip
    report = json.loads(done.stdout)
    then = positions(db_file, "Agent/src")[3 * 5 - 1]  # the 3rd step's reply: the replica's last entry then
    assert (report["source"], report["position"]) == ("Agent/src", then)
    assert state_at(live, Agent, "Agent/then") == state_at(db_file, Agent, "Agent/src", then)
    with Journal.open(live) as journal:
        record = fork_decoder.decode(next(iter(journal.entries("Agent/then"))).data)
        assert (record.replica, record.timestamp) == (url, between.isoformat())
    # From an earlier position of the same point in time, delivering what followed in the replica again:
    # the effects' results come from the replica's journal (this process's counter shows none ran).
    done = cli(
        "fork", "Agent/src", "--as", "Agent/again", "--at", str(first_reply), "--replay-after",
        "--from", url, "--timestamp", between.isoformat(), "--module", "tests.test_fork", "--db", live, "--json",
    )  # fmt: skip
    report = json.loads(done.stdout)
    assert (report["redelivered"], report["reused"], report["ran"], report["divergence"]) == (2, 4, 0, None)
    assert state_at(live, Agent, "Agent/again") == state_at(db_file, Agent, "Agent/src", then)
    # Without --from, a timestamp means nothing: refused, nothing written.
    done = cli("fork", "Agent/src", "--as", "Agent/x", "--timestamp", "2026-01-01T00:00:00Z",
               "--module", "tests.test_fork", "--db", live, check=False)  # fmt: skip
    assert done.returncode == 2 and "--from" in done.stderr
    assert Journal.open(live).actor("Agent/x") is None


class Lookup(msgspec.Struct):
    word: str


class Dictionary(Actor):
    """Another actor, asked by the one forked: it counts how often it is asked."""

    asked: ClassVar[list[str]] = []

    @handler
    async def lookup(self, msg: Lookup) -> int:
        Dictionary.asked.append(msg.word)
        return len(msg.word)


class Approve(msgspec.Struct):
    item: str


class Approved(msgspec.Struct):
    item: str
    size: int
    verdict: str


class Clerk(Actor):
    """Asks another actor and waits on a promise (a human's approval) in every step."""

    class State(msgspec.Struct):
        done: list[str] = msgspec.field(default_factory=list)

    state: State
    automatic_from: ClassVar[int] = 10**9
    """The code change: items numbered from here on are approved without waiting for anyone."""

    @handler
    async def approve(self, msg: Approve) -> str:
        number = int(msg.item.rpartition(" ")[2])
        size = await self.ctx.ask("Dictionary/en", Lookup(msg.item))
        verdict = await self.ctx.promise(f"approval {msg.item}") if number < Clerk.automatic_from else "auto"
        self.emit(Approved(msg.item, size, verdict))
        return verdict

    @apply
    def _approved(self, ev: Approved) -> None:
        self.state.done.append(f"{ev.item}: {ev.size} {ev.verdict}")


async def approve(rt: Runtime, address: str, count: int) -> None:
    for i in range(count):
        item = f"item {i}"
        await rt.resolve(address, f"approval {item}", f"yes {i}")  # kept until the handler waits on it
        await rt.ask(address, Approve(item))


async def test_replay_after_reuses_asks_and_promises_and_stops_after_a_step_with_fewer_effects(db: str) -> None:
    Dictionary.asked, Clerk.automatic_from = [], 10**9
    async with Runtime(db, actors=[Clerk, Dictionary]) as rt:
        await approve(rt, "Clerk/c", 5)
        asked = list(Dictionary.asked)
        report = await rt.fork("Clerk/c", at=positions(db, "Clerk/c")[0], to="Clerk/same", replay_after=True)
        # No ask went to the dictionary again, and no promise was waited on: both came from the journal.
        assert Dictionary.asked == asked
        assert (report.redelivered, report.reused, report.ran, report.divergence) == (5, 10, 0, None)
        assert state_at(db, Clerk, "Clerk/same") == state_at(db, Clerk, "Clerk/c")
        # The changed code approves from item 3 on by itself: that step runs fewer effects than the source's.
        Clerk.automatic_from = 3
        report = await rt.fork("Clerk/c", at=positions(db, "Clerk/c")[0], to="Clerk/auto", replay_after=True)
        assert report.divergence == "effect #1 promise:approval item 3: the source ran it, the fork did not"
        assert (report.reused, report.ran) == (7, 1)  # items 0-2 and item 3's ask reused; item 4's ask ran
        assert Dictionary.asked == [*asked, "item 4"]
        assert state_at(db, Clerk, "Clerk/auto").done[-3:] == [  # type: ignore[attr-defined]
            "item 2: 6 yes 2",
            "item 3: 6 auto",
            "item 4: 6 auto",
        ]
        # A fork can be forked too.
        await rt.fork("Clerk/auto", to="Clerk/again")
        assert state_at(db, Clerk, "Clerk/again") == state_at(db, Clerk, "Clerk/auto")
