"""Streamed effects: each chunk journaled as it arrives, the result once, replay from the journal,
attempts that start over marked as such, and readers that get every item exactly once."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import msgspec
import pytest

from actors import Actor, EffectError, HandlerError, Retry, apply, handler
from runtime import Registry, Runtime, StreamItem, replay
from runtime._stream import ChunkLog
from storage import EntryKind, Journal, Outcome, Unit

from .conftest import BACKENDS
from .served import cli
from .stream_models import Write, Writer, Wrote, words


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every test here runs on a SQLite file and on a PostgreSQL database (``db`` makes either)."""
    return str(request.param)


async def items(rt: Runtime, address: str, offset: int = 0) -> list[StreamItem]:
    """The stream of ``address`` as it is now."""
    return [item async for item in rt.stream(address, offset, follow=False)]


def summary(found: list[StreamItem]) -> list[tuple[str, int, Any]]:
    return [(i.kind, i.attempt, i.value) for i in found]


def text(count: int) -> str:
    return "".join(f"w{i} " for i in range(count))


async def entries_of(db: str, address: str, kind: str | None = None) -> list[Any]:
    with Journal.open(db) as journal:
        return list(journal.entries(address, kind=kind))


async def wait_for(predicate: Callable[[], bool], what: str) -> None:
    with anyio.fail_after(20, shield=False):
        while not predicate():
            await anyio.sleep(0.005)
    assert predicate(), what


def chunks_in(db: str, address: str) -> int:
    with Journal.open(db) as journal:
        return sum(1 for _ in journal.entries(address, kind=EntryKind.CHUNK))


# -- the basics ----------------------------------------------------------------------------


async def test_each_chunk_is_journaled_the_result_once_and_readers_get_them_in_order(db: str) -> None:
    async with Runtime(db, actors=[Writer]) as rt:
        assert await rt.ask("Writer/a", Write(5)) == text(5)
        found = await items(rt, "Writer/a")
    assert summary(found) == [
        ("start", 1, None),
        *[("chunk", 1, f"w{i} ") for i in range(5)],
        ("end", 1, text(5)),
    ]
    journal = await entries_of(db, "Writer/a")
    stream = [e for e in journal if e.kind in (EntryKind.START, EntryKind.CHUNK) or e.type.startswith("stream:")]
    assert [i.offset for i in found] == [e.seq for e in stream]  # an item's offset is its entry's seq
    assert [e.type for e in stream] == ["stream:words"] * 7
    assert [e.kind for e in journal if e.kind == EntryKind.EFFECT] == [EntryKind.EFFECT]  # the result: once
    assert found[-1].ok and not found[-1].cut and found[-1].effect == "words" and found[-1].index == 0


async def test_a_fast_stream_costs_a_few_commits_not_one_per_chunk(db: str) -> None:
    async with Runtime(db, actors=[Writer]) as rt:
        await rt.ask("Writer/warm", Write(1))
        before = rt.stats.units
        assert await rt.ask("Writer/a", Write(1000)) == text(1000)
        units = rt.stats.units - before
        assert len(await items(rt, "Writer/a")) == 1002
    # The step's message, its start, then everything that arrived while that commit ran, then its end.
    assert units <= 5, units


async def test_readers_follow_live_and_resume_from_any_offset_exactly_once(db: str) -> None:
    async with Runtime(db, actors=[Writer]) as rt:
        got: list[StreamItem] = []

        async def follow() -> None:
            async for item in rt.stream("Writer/a"):
                got.append(item)
                if item.kind == "end":
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await rt.tell("Writer/a", Write(30, pace=0.002))
        everything = await items(rt, "Writer/a")
        assert got == everything
        assert summary(got)[-1] == ("end", 1, text(30))
        for item in everything:
            assert await items(rt, "Writer/a", item.offset) == [i for i in everything if i.offset >= item.offset]
        assert await items(rt, "Writer/a", everything[-1].offset + 1) == []
        assert await items(rt, "Writer/nobody") == []


async def test_a_follower_ends_when_the_runtime_closes(db: str) -> None:
    rt = await Runtime(db, actors=[Writer]).__aenter__()
    await rt.ask("Writer/a", Write(2))
    got: list[StreamItem] = []

    async def follow() -> None:
        async for item in rt.stream("Writer/a"):
            got.append(item)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await wait_for(lambda: len(got) == 4, "the follower to read what is there")
            await rt.close()  # the follower ends by itself: the task group can exit
    assert [i.kind for i in got] == ["start", "chunk", "chunk", "end"]


class Chunk(msgspec.Struct):
    n: int
    word: str


async def numbers(count: int) -> AsyncIterator[int]:
    for i in range(count):
        yield i


class Counting:
    """An async iterator that is not a generator."""

    def __init__(self, count: int) -> None:
        self.left = count

    def __aiter__(self) -> Counting:
        return self

    async def __anext__(self) -> int:
        if self.left == 0:
            raise StopAsyncIteration
        self.left -= 1
        return self.left


async def counting(count: int) -> AsyncIterator[int]:
    return Counting(count)  # a coroutine returning an async iterator


def structs(count: int) -> AsyncIterator[Chunk]:
    async def gen() -> AsyncIterator[Chunk]:
        for i in range(count):
            yield Chunk(i, f"w{i}")

    return gen()


def total(chunks: list[int]) -> int:
    return sum(chunks)


class Shapes(Actor):
    @handler
    async def go(self, msg: Write) -> list[Any]:
        ints = self.ctx.stream(numbers, msg.words)
        seen = [chunk async for chunk in ints]
        other = self.ctx.stream(counting, msg.words)
        seen += [chunk async for chunk in other]
        typed = self.ctx.stream(structs, msg.words)
        chunks = [chunk async for chunk in typed]
        assert all(isinstance(c, Chunk) for c in chunks)
        assert all(isinstance(c, Chunk) for c in typed.result)
        joined = self.ctx.stream(numbers, msg.words, assemble=total)
        async for _ in joined:
            pass
        return [seen, ints.result, other.result, [c.word for c in typed.result], joined.result]


async def test_generators_iterators_and_typed_chunks_are_journaled_and_replayed_alike(db: str) -> None:
    async with Runtime(db, actors=[Shapes]) as rt:
        reply = await rt.ask("Shapes/a", Write(3))
        assert reply == [[0, 1, 2, 2, 1, 0], [0, 1, 2], [2, 1, 0], ["w0", "w1", "w2"], 3]
        found = await items(rt, "Shapes/a")
    assert [i.effect for i in found if i.kind == "end"] == ["numbers", "counting", "structs", "numbers"]
    assert [i.value for i in found if i.kind == "chunk"][6:9] == [{"n": i, "word": f"w{i}"} for i in range(3)]
    with Journal.open(db) as journal:
        assert replay(journal, Registry([Shapes])).ok


# -- failures --------------------------------------------------------------------------------


class Script:
    """How each call of ``scripted`` behaves: a list of (chunks, then raise?) per call."""

    plan: list[tuple[int, bool]] = []
    calls = 0
    closed = 0


async def scripted(tag: str) -> AsyncIterator[str]:
    chunks, fail = Script.plan[min(Script.calls, len(Script.plan) - 1)]
    Script.calls += 1
    try:
        for i in range(chunks):
            await anyio.sleep(0)
            yield f"{tag}{i} "
        if fail:
            raise ConnectionError(f"the model went away after {chunks} chunk(s)")
    finally:
        Script.closed += 1


class Scripted(Actor):
    class State(msgspec.Struct):
        seen: list[str] = msgspec.field(default_factory=list)

    state: State

    @handler
    async def go(self, msg: Write) -> str:
        stream = self.ctx.stream(scripted, msg.tag, retry=Retry(max_attempts=msg.words, initial=0.01, jitter=0))
        try:
            async for chunk in stream:
                self.emit(Wrote(chunk))
        except EffectError as exc:
            return f"failed {exc.type_name}: {exc.message}"
        return str(stream.result)

    @apply
    def _wrote(self, ev: Wrote) -> None:
        self.state.seen.append(ev.chunk)


async def test_a_failed_attempt_starts_over_and_the_handler_sees_one_attempt_only(db: str) -> None:
    # Attempt 1 fails before its first chunk (retried in place), attempt 2 after two chunks
    # (the step runs again from its journal), attempt 3 succeeds.
    Script.plan, Script.calls = [(0, True), (2, True), (4, False)], 0
    async with Runtime(db, actors=[Scripted]) as rt:
        assert await rt.ask("Scripted/a", Write(3, tag="t")) == "t0 t1 t2 t3 "
        found = await items(rt, "Scripted/a")
        assert rt.statistics().pending == 0
    assert Script.calls == 3
    assert summary(found) == [
        ("start", 1, None),
        ("failed", 1, None),
        ("restart", 2, None),
        ("chunk", 2, "t0 "),
        ("chunk", 2, "t1 "),
        ("failed", 2, None),
        ("restart", 3, None),
        *[("chunk", 3, f"t{i} ") for i in range(4)],
        ("end", 3, "t0 t1 t2 t3 "),
    ]
    assert found[1].error_type == "ConnectionError" and found[1].retry_at is not None
    async with Runtime(db, actors=[Scripted]) as rt:
        # The events of the abandoned attempt were never kept: four chunks seen, once each.
        assert await rt.ask("Scripted/a", Write(1, tag="u")) == "u0 u1 u2 u3 "
    with Journal.open(db) as journal:
        assert [len(e.decoded()) for e in journal.entries("Scripted/a", kind=EntryKind.EVENT)] == [1] * 8
        assert replay(journal, Registry([Scripted])).ok


async def test_a_stream_that_keeps_failing_ends_with_its_error_journaled(db: str) -> None:
    Script.plan, Script.calls = [(1, True)], 0
    async with Runtime(db, actors=[Scripted]) as rt:
        reply = await rt.ask("Scripted/a", Write(2, tag="x"))
        assert reply == "failed ConnectionError: the model went away after 1 chunk(s)"
        found = await items(rt, "Scripted/a")
    assert [(i.kind, i.attempt) for i in found] == [
        ("start", 1), ("chunk", 1), ("failed", 1), ("restart", 2), ("chunk", 2), ("end", 2),
    ]  # fmt: skip
    assert not found[-1].ok and found[-1].error_type == "ConnectionError" and found[-1].value is None
    with Journal.open(db) as journal:
        assert replay(journal, Registry([Scripted])).ok
    assert Script.calls == 2


async def stalls(count: int) -> AsyncIterator[str]:
    yield "first "
    await anyio.sleep(3600)
    yield "never "


class Stalled(Actor):
    @handler
    async def go(self, msg: Write) -> str:
        try:
            async for _ in self.ctx.stream(stalls, 1, timeout=msg.pace):
                pass
        except EffectError as exc:
            return f"{exc.type_name}: {exc.message}"
        return "finished"


async def test_a_chunk_that_does_not_come_within_the_timeout_fails_the_stream(db: str) -> None:
    async with Runtime(db, actors=[Stalled]) as rt:
        with anyio.fail_after(30):
            reply = await rt.ask("Stalled/a", Write(1, pace=0.05))
        assert reply == "TimeoutError: stream:stalls sent nothing for 0.05 s"
        assert [i.kind for i in await items(rt, "Stalled/a")] == ["start", "chunk", "end"]


async def unstorable(count: int) -> AsyncIterator[Any]:
    yield "fine "
    yield object()


class Unstorable(Actor):
    @handler
    async def go(self, msg: Write) -> str:
        try:
            async for _ in self.ctx.stream(unstorable, 1):
                pass
        except EffectError as exc:
            return exc.type_name
        return "stored"


async def test_a_chunk_that_cannot_be_stored_fails_the_stream_alone(db: str) -> None:
    async with Runtime(db, actors=[Unstorable]) as rt:
        assert await rt.ask("Unstorable/a", Write(1)) == "UnstorableValueError"
        assert [(i.kind, i.value) for i in await items(rt, "Unstorable/a")] == [
            ("start", None), ("chunk", "fine "), ("end", None),
        ]  # fmt: skip


# -- crashes ---------------------------------------------------------------------------------


async def test_a_stream_cut_by_a_crash_starts_over_with_a_marker_and_is_never_spliced(db: str) -> None:
    rt = await Runtime(db, actors=[Writer]).__aenter__()
    await rt.tell("Writer/a", Write(40, pace=0.003))
    await wait_for(lambda: chunks_in(db, "Writer/a") >= 5, "chunks to be journaled")
    await rt.abandon()  # a crash in the middle of the stream
    cut = chunks_in(db, "Writer/a")
    async with Runtime(db, actors=[Writer]) as rt:
        await wait_for(lambda: rt.statistics().pending == 0, "the resumed step to finish")
        found = await items(rt, "Writer/a")
    first = [i for i in found if i.attempt == 1]
    second = [i for i in found if i.attempt == 2]
    assert summary(first) == [("start", 1, None), *[("chunk", 1, f"w{i} ") for i in range(cut)]]
    assert summary(second) == [("restart", 2, None), *[("chunk", 2, f"w{i} ") for i in range(40)], ("end", 2, text(40))]
    assert found == first + second
    with Journal.open(db) as journal:
        # The handler saw the second attempt only: forty chunk events, once each.
        events = [e.type for e in journal.entries("Writer/a", kind=EntryKind.EVENT)]
        assert events.count("Wrote") == 40 and events.count("Done") == 1
        assert replay(journal, Registry([Writer])).ok


class Gate:
    """An effect that waits until the test opens the gate."""

    open = anyio.Event()
    entered = 0


async def gate() -> str:
    Gate.entered += 1
    await Gate.open.wait()
    return "through"


class Waiting(Actor):
    """Streams, then waits in an effect: a crash then must not call the stream again."""

    @handler
    async def go(self, msg: Write) -> str:
        stream = self.ctx.stream(scripted, msg.tag)
        seen = [chunk async for chunk in stream]
        go_on = await self.ctx.effect(gate)
        return f"{''.join(seen)}|{stream.result}|{go_on}"


async def test_a_recorded_stream_comes_back_from_the_journal_after_a_crash(db: str) -> None:
    Script.plan, Script.calls = [(3, False)], 0
    Gate.open, Gate.entered = anyio.Event(), 0
    rt = await Runtime(db, actors=[Waiting]).__aenter__()
    await rt.tell("Waiting/a", Write(1, tag="r"))
    await wait_for(lambda: Gate.entered == 1, "the step to wait in its effect")
    await rt.abandon()
    async with Runtime(db, actors=[Waiting]) as rt:
        Gate.open.set()
        await wait_for(lambda: rt.statistics().pending == 0, "the resumed step to finish")
        assert Script.calls == 1  # never called again
        found = await items(rt, "Waiting/a")
    assert [i.kind for i in found] == ["start", "chunk", "chunk", "chunk", "end"]
    with Journal.open(db) as journal:
        reply = [e.decoded() for e in journal.entries("Waiting/a", kind=EntryKind.REPLY)]
    assert reply == [{"ok": True, "value": "r0 r1 r2 |r0 r1 r2 |through"}]


# -- leaving a stream early -------------------------------------------------------------------


class Leaver(Actor):
    name = "Leaver"

    @handler
    async def go(self, msg: Write) -> str:
        stream = self.ctx.stream(scripted, msg.tag)
        seen = []
        async for chunk in stream:
            seen.append(chunk)
            if len(seen) == msg.words:
                break
        after = await self.ctx.effect(echo, "after")
        return f"{''.join(seen)}|{stream.result}|{after}"


async def echo(value: str) -> str:
    return value


class LeaverReadingMore(Actor):
    name = "Leaver"

    @handler
    async def go(self, msg: Write) -> str:
        stream = self.ctx.stream(scripted, msg.tag)
        seen = [chunk async for chunk in stream]
        return "".join(seen)


async def test_a_stream_left_early_is_journaled_where_it_was_left_and_replays_so(db: str) -> None:
    Script.plan, Script.calls, Script.closed = [(10, False)], 0, 0
    async with Runtime(db, actors=[Leaver]) as rt:
        assert await rt.ask("Leaver/a", Write(3, tag="c")) == "c0 c1 c2 |c0 c1 c2 |after"
        found = await items(rt, "Leaver/a")
    assert Script.closed == 1  # the generator was closed when the handler left it
    assert summary(found) == [("start", 1, None), *[("chunk", 1, f"c{i} ") for i in range(3)], ("end", 1, "c0 c1 c2 ")]
    assert found[-1].cut
    with Journal.open(db) as journal:
        assert replay(journal, Registry([Leaver])).ok
        report = replay(journal, Registry([LeaverReadingMore]))
    assert [d.recorded for d in report.divergences] == ["stream:scripted left by the handler after 3 chunk(s)"]


# -- non-determinism --------------------------------------------------------------------------


class WriterAsEffect(Actor):
    """The same actor after a change: the stream became a plain effect."""

    name = "Writer"

    @handler
    async def write(self, msg: Write) -> str:
        return str(await self.ctx.effect(echo, "all at once"))


async def other_words(count: int, pace: float, tag: str = "") -> AsyncIterator[str]:
    async for word in words(count, pace, tag):
        yield word


class WriterRenamed(Actor):
    """The same actor after a change: another function streams."""

    name = "Writer"

    @handler
    async def write(self, msg: Write) -> str:
        stream = self.ctx.stream(other_words, msg.words, msg.pace)
        return "".join([chunk async for chunk in stream])


class WriterReadingLess(Actor):
    """The same actor after a change: it stops after one chunk."""

    name = "Writer"

    @handler
    async def write(self, msg: Write) -> str:
        async for chunk in self.ctx.stream(words, msg.words, msg.pace, msg.tag):
            return str(chunk)
        return ""


async def words_as_ints(count: int, pace: float, tag: str = "") -> AsyncIterator[int]:
    for i in range(count):
        yield i


words_as_ints.__qualname__ = "words"  # the same function, its chunks annotated as ints now


class WriterOfInts(Actor):
    """The same actor after a change: the chunks are ints now."""

    name = "Writer"

    @handler
    async def write(self, msg: Write) -> str:
        async for _ in self.ctx.stream(words_as_ints, msg.words, msg.pace):
            pass
        return ""


@pytest.mark.parametrize(
    ("changed", "recorded", "current"),
    [
        (WriterAsEffect, "effect #0 stream:words", "effect #0 echo"),
        (WriterRenamed, "effect #0 stream:words", "effect #0 stream:other_words"),
        (WriterReadingLess, "stream:words read for 3 chunk(s) and the end", "stream:words left after 1"),
        (WriterOfInts, "chunk #0 of stream:words", "a chunk type it no longer decodes as (Expected `int`, got `str`)"),
    ],
)
async def test_replay_finds_a_changed_streamed_effect(
    db: str, changed: type[Actor], recorded: str, current: str
) -> None:
    async with Runtime(db, actors=[Writer]) as rt:
        await rt.ask("Writer/a", Write(3))
    with Journal.open(db) as journal:
        assert replay(journal, Registry([Writer])).ok
        report = replay(journal, Registry([changed]))
    assert [(d.recorded, d.current) for d in report.divergences] == [(recorded, current)]


class WaitingRenamed(Actor):
    name = "Waiting"

    @handler
    async def go(self, msg: Write) -> str:
        async for _ in self.ctx.stream(other_words, 1, 0.0):
            pass
        return str(await self.ctx.effect(gate))


async def test_a_resumed_step_whose_stream_changed_suspends_its_actor(db: str) -> None:
    Script.plan, Script.calls = [(2, False)], 0
    Gate.open, Gate.entered = anyio.Event(), 0
    rt = await Runtime(db, actors=[Waiting]).__aenter__()
    await rt.tell("Waiting/a", Write(1, tag="s"))
    await wait_for(lambda: Gate.entered == 1, "the step to wait in its effect")
    await rt.abandon()
    async with Runtime(db, actors=[WaitingRenamed]) as rt:
        await wait_for(lambda: rt.statistics().suspended == ("Waiting/a",), "the actor to be suspended")
    with Journal.open(db) as journal:
        info = journal.actor("Waiting/a")
    assert info is not None and info.status == "suspended"
    assert "effect #0 stream:scripted" in (info.reason or "") and "stream:other_words" in (info.reason or "")


class Journaled:
    """Where the effect below looks for the stream's chunks."""

    db = ""


def chunks_journaled(address: str) -> int:
    """An effect that reads the journal from outside: how many chunks of ``address`` are durable now."""
    return chunks_in(Journaled.db, address)


class Counter(Actor):
    @handler
    async def go(self, msg: Write) -> int:
        read = 0
        async for _ in self.ctx.stream(scripted, msg.tag):
            read += 1
            if read == msg.words:
                break
        return int(await self.ctx.effect(chunks_journaled, "Counter/a"))


async def test_the_chunks_a_handler_read_are_durable_before_its_next_effect_runs(db: str) -> None:
    # Chunks as fast as the generator makes them: without the stream closing (and
    # waiting for its commits) before the effect, most would still be queued.
    Script.plan, Script.calls, Journaled.db = [(200, False)], 0, db
    async with Runtime(db, actors=[Counter]) as rt:
        assert await rt.ask("Counter/a", Write(150, tag="d")) == 150


class ToolPerChunk(Actor):
    @handler
    async def go(self, msg: Write) -> str:
        kept = []
        async for chunk in self.ctx.stream(scripted, msg.tag):
            kept.append(await self.ctx.effect(echo, chunk))  # closes the stream: one is read at a time
        return "".join(kept)


async def test_reading_on_after_another_effect_began_fails_loudly_and_replays_so(db: str) -> None:
    Script.plan, Script.calls = [(5, False)], 0
    async with Runtime(db, actors=[ToolPerChunk]) as rt:
        with pytest.raises(HandlerError) as failure:
            await rt.ask("ToolPerChunk/a", Write(1, tag="e"))
        found = await items(rt, "ToolPerChunk/a")
    assert "stream:scripted was closed when the handler began another effect" in str(failure.value)
    assert summary(found) == [("start", 1, None), ("chunk", 1, "e0 "), ("end", 1, "e0 ")] and found[-1].cut
    with Journal.open(db) as journal:
        assert replay(journal, Registry([ToolPerChunk])).ok


async def test_the_replay_and_check_commands_read_streamed_effects(db: str) -> None:
    async with Runtime(db, actors=[Writer]) as rt:
        await rt.ask("Writer/a", Write(4))
    replayed = await anyio.to_thread.run_sync(lambda: cli("replay", "tests.stream_models", "--db", db, "--json"))
    assert json.loads(replayed.stdout) == {"ok": True, "actors": 1, "steps": 1, "skipped": 0, "divergences": []}
    module = "tests.stream_models"
    checked = await anyio.to_thread.run_sync(lambda: cli("check", "--db", db, "--module", module, "--json"))
    report = json.loads(checked.stdout)
    assert report["ok"] and report["problems"] == [] and report["entries"] == 13
    history = await anyio.to_thread.run_sync(
        lambda: cli("history", "Writer/a", "--db", db, "--kind", "chunk", "--json")
    )
    assert [json.loads(line)["data"]["value"] for line in history.stdout.splitlines()] == [f"w{i} " for i in range(4)]


def test_draining_a_log_whose_commit_is_done_but_not_yet_reported_lets_the_report_run() -> None:
    # A commit's future can be done while its done callback is only scheduled. Awaiting a
    # done future does not yield to the loop, so a drain that only awaited it spun forever
    # and froze the loop with it (1,000 concurrent streams did). Run in a thread of its own:
    # a frozen loop cannot time itself out.
    drained: list[int] = []

    def run() -> None:
        async def main() -> None:
            loop = asyncio.get_running_loop()
            futures: list[asyncio.Future[Outcome]] = []

            def commit(unit: Unit) -> asyncio.Future[Outcome]:
                futures.append(loop.create_future())
                return futures[-1]

            log = ChunkLog(lambda items: Unit(), commit, lambda: None)
            log.add(EntryKind.CHUNK, "stream:x", b"\x01")
            futures[0].set_result(None)  # done; the log hears of it on the loop's next turn
            assert await log.drain() is None
            drained.append(len(futures))

        asyncio.run(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(20)
    assert drained == [1], "the drain never returned"


async def test_the_console_shows_starts_restarts_and_chunks(db: str) -> None:
    from runtime.interfaces.console._model import Links, entry_view

    Script.plan, Script.calls = [(1, True), (2, False)], 0
    async with Runtime(db, actors=[Scripted]) as rt:
        assert await rt.ask("Scripted/a", Write(2, tag="v")) == "v0 v1 "
    with Journal.open(db) as journal:
        shown = [
            (view.label, view.summary, view.attempt)
            for view in (entry_view(e, Links("/ui")) for e in journal.entries("Scripted/a"))
            if view.kind in (EntryKind.START, EntryKind.CHUNK)
        ]
    assert shown == [
        ("start stream:scripted", "the stream begins", 1),
        ("chunk stream:scripted", '"v0 "', 1),
        ("restart stream:scripted", "attempt 2 starts over", 2),
        ("chunk stream:scripted", '"v0 "', 2),
        ("chunk stream:scripted", '"v1 "', 2),
    ]
