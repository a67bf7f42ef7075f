"""Agents for the console and SQL tests: a tool call, a human approval, a call to
another actor, a timer, a failure, and text written to hurt a browser.

Served by ``python -m runtime serve tests.console_agents`` in the browser tests;
:func:`populate` gives a journal a bit of everything through the real runtime.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import anyio
import msgspec

import storage
from actors import Actor, apply, handler
from runtime import Runtime

HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"
"""Text that runs script if a page ever treats journal content as HTML."""


class Research(msgspec.Struct):
    """A question to look up."""

    question: str
    depth: int = 1


class Approve(msgspec.Struct):
    """Something a human must approve."""

    what: str


class Consult(msgspec.Struct):
    """Ask the librarian about a topic."""

    topic: str


class Remind(msgspec.Struct):
    """Schedule a reminder."""

    after_s: float
    note: str = ""


class Fail(msgspec.Struct):
    """Fail on purpose."""

    why: str


class File(msgspec.Struct):
    """Keep a summary under a topic."""

    topic: str
    summary: str


class Lookup(msgspec.Struct):
    """What is kept under a topic?"""

    topic: str


class Hang(msgspec.Struct):
    """Run an effect that never returns (until the process stops)."""


class Drift(msgspec.Struct):
    """Call a tool, then wait for the promise ``go``."""


class Noted(msgspec.Struct):
    question: str


class Answered(msgspec.Struct):
    question: str
    answer: str


class Decided(msgspec.Struct):
    what: str
    decision: str


class Filed(msgspec.Struct):
    topic: str
    summary: str


def lookup(question: str) -> str:
    """The tool (offline)."""
    return f"found {len(question)} things about {question}"


HANGS: list[int] = []
"""How often the hanging effect started (in this process)."""


async def hang() -> None:
    """An effect that waits until its process stops."""
    HANGS.append(1)
    await anyio.sleep(3600)


def first_tool() -> str:
    return "first"


def second_tool() -> str:
    return "second"


DRIFTED = "STELE_CONSOLE_DRIFTED"
"""Set, this module's Agent calls another tool in ``drift``: a journal written before diverges."""


class Agent(Actor):
    """Researches, waits for approvals, consults the librarian."""

    class State(msgspec.Struct):
        questions: list[str] = msgspec.field(default_factory=list)
        answers: dict[str, str] = msgspec.field(default_factory=dict)
        decisions: dict[str, str] = msgspec.field(default_factory=dict)

    state: State
    snapshot_every = 4

    @handler
    async def research(self, msg: Research) -> str:
        """Note the question, call the tool, file the answer with the librarian."""
        self.emit(Noted(msg.question))
        answer = await self.ctx.effect(lookup, msg.question)
        self.emit(Answered(msg.question, answer))
        await self.ctx.tell("Librarian/main", File(msg.question, answer))
        return answer

    @handler
    async def approve(self, msg: Approve) -> str:
        """Wait for a human to resolve the promise ``approval``."""
        decision = await self.ctx.promise("approval")
        self.emit(Decided(msg.what, str(decision)))
        return f"{msg.what}: {decision}"

    @handler
    async def consult(self, msg: Consult) -> str:
        """Ask the librarian (a durable call to another actor)."""
        kept: str = await self.ctx.ask("Librarian/main", Lookup(msg.topic))
        return kept

    @handler
    async def remind(self, msg: Remind) -> str:
        """Schedule a reminder to itself."""
        return self.ctx.schedule(msg.after_s, self.address, Research(msg.note or "reminder"))

    @handler
    async def fail(self, msg: Fail) -> None:
        """Raise."""
        raise ValueError(msg.why)

    @handler
    async def hang(self, msg: Hang) -> None:
        """Never finish."""
        await self.ctx.effect(hang)

    @handler
    async def drift(self, msg: Drift) -> str:
        """Call a tool (which one depends on the code's version), then wait for ``go``."""
        tool = second_tool if os.environ.get(DRIFTED) else first_tool
        made: str = await self.ctx.effect(tool)
        await self.ctx.promise("go")
        return made

    @apply
    def _noted(self, ev: Noted) -> None:
        self.state.questions.append(ev.question)

    @apply
    def _answered(self, ev: Answered) -> None:
        self.state.answers[ev.question] = ev.answer

    @apply
    def _decided(self, ev: Decided) -> None:
        self.state.decisions[ev.what] = ev.decision


class Librarian(Actor):
    """Keeps summaries by topic."""

    class State(msgspec.Struct):
        shelf: dict[str, str] = msgspec.field(default_factory=dict)

    state: State

    @handler
    async def file(self, msg: File) -> int:
        """Keep a summary."""
        self.emit(Filed(msg.topic, msg.summary))
        return len(self.state.shelf)

    @handler
    async def lookup(self, msg: Lookup) -> str:
        """What is kept under a topic."""
        return self.state.shelf.get(msg.topic, "nothing")

    @apply
    def _filed(self, ev: Filed) -> None:
        self.state.shelf[ev.topic] = ev.summary


ACTORS = [Agent, Librarian]


async def waiting_on(rt: Runtime, address: str, name: str) -> None:
    """Until a step of ``address`` waits on promise ``name``."""
    with anyio.fail_after(10):
        while (address, name) not in rt.statistics().waiting_promises:
            await anyio.sleep(0.01)


async def populate(rt: Runtime, *, hostile: bool = True) -> None:
    """A bit of everything: answers, a filed summary, a consult, a pending approval, a timer,
    an error reply, and (``hostile``) a hostile question in a hostile actor's key."""
    await rt.ask("Agent/ada", Research("Why is the sky blue?"))
    await rt.ask("Agent/ada", Research("What is a durable actor?"))
    await rt.ask("Agent/ada", Consult("Why is the sky blue?"))
    await rt.ask("Agent/ada", Remind(3600, "check again"))
    try:
        await rt.ask("Agent/ada", Fail("on purpose"))
    except Exception as exc:  # the handler's error, as a caller sees it
        assert "on purpose" in str(exc)
    if hostile:
        await rt.ask(f"Agent/{HOSTILE}", Research(HOSTILE))
    await rt.tell("Agent/bob", Approve("the budget"))
    await waiting_on(rt, "Agent/bob", "approval")


async def until(check: Callable[[], bool], what: str) -> None:
    """Until ``check()`` is true (10 s at most)."""
    with anyio.move_on_after(10):
        while not check():
            await anyio.sleep(0.01)
        return
    raise AssertionError(f"waited 10 s for {what}")


async def bury(db: str, *addresses: str) -> None:
    """Make each of ``addresses`` a dead letter: its message hangs, and the process stops, twice.
    (Do it before any other actor has a message pending: that one would be buried too.)"""
    HANGS.clear()
    for run in range(3):
        rt = await Runtime(db, actors=ACTORS, max_attempts=1).__aenter__()
        if run == 0:
            for address in addresses:
                await rt.tell(address, Hang())
        if run < 2:
            expected = len(addresses) * (run + 1)
            await until(lambda: len(HANGS) >= expected, "the poison messages to hang")  # noqa: B023
            await rt.abandon()  # as a crash would
        else:
            await until(lambda: _letters(db) >= len(addresses), "the burial")
            await rt.close()


def _letters(db: str) -> int:
    with storage.Journal.open(db) as journal:
        return len(journal.dead_letters())


async def suspend(db: str, address: str) -> None:
    """Suspend ``address`` after non-determinism: its open step's journal no longer matches the code."""
    async with Runtime(db, actors=ACTORS, grace=0) as rt:
        await rt.tell(address, Drift())
        await waiting_on(rt, address, "go")
    os.environ[DRIFTED] = "1"
    try:
        async with Runtime(db, actors=ACTORS, grace=0) as rt:
            await until(lambda: address in rt.statistics().suspended, "the divergence")
    finally:
        del os.environ[DRIFTED]
