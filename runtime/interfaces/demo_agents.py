"""The demo's agents: a research agent that plans, calls a tool and streams a
language model's answer through journaled effects, and a librarian it files its
findings with.

The "LLM" is a deterministic offline stand-in, so the demo needs no network and
no keys; swap in a real client (``integrations.openai``) and nothing else
changes: its tokens are journaled as they come, readers of the agent's stream
get them live, and a replay hands the recorded answer back instead of calling it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator

import anyio
import msgspec

from actors import Actor, apply, handler

TOOL_LOG = os.environ.get("STELE_DEMO_TOOL_LOG")
"""Where the search tool traces its real calls (the demo sets it, to show they never repeat)."""


class Research(msgspec.Struct):
    """A question to research (``depth`` > 1: the model takes its time)."""

    question: str
    depth: int = 1


class Planned(msgspec.Struct):
    """The agent planned its steps for a question."""

    question: str
    steps: list[str]


class Answered(msgspec.Struct):
    """The agent found an answer, from these sources."""

    question: str
    answer: str
    sources: list[str]


class File(msgspec.Struct):
    """Keep this summary under this topic."""

    topic: str
    summary: str


class Filed(msgspec.Struct):
    """The librarian kept a summary."""

    topic: str
    summary: str


class Catalogue(msgspec.Struct):
    """Which topics are kept?"""


def search(query: str, key: str) -> list[str]:
    """The tool: a search (offline). Every real call is logged outside the journal."""
    if TOOL_LOG:
        with open(TOOL_LOG, "a") as log:
            log.write(f"{key} {query}\n")
    digest = hashlib.sha256(query.encode()).hexdigest()
    return [f"https://example.org/{digest[i : i + 8]}" for i in (0, 8, 16)]


def _answer(prompt: str) -> str:
    question, _, sources = prompt.partition("\nSources: ")
    words = [w for w in question.replace("?", "").split() if len(w) > 3]
    return (
        f"{' '.join(words).capitalize()}: a summary of {len(sources.split())} sources. "
        "Each step is written to one journal before it counts, so a crash costs only the step under way, "
        "which resumes where its journal ends."
    )


async def llm(prompt: str, slow: bool = False) -> AsyncIterator[str]:
    """A deterministic stand-in for a language model, streaming its answer word by word (slow ones take a while)."""
    for i, word in enumerate(_answer(prompt).split(" ")):
        await anyio.sleep(0.15 if slow else 0.005)
        yield word if i == 0 else " " + word


class ResearchAgent(Actor):
    """Plans a question, searches, asks the model, files the answer with the librarian."""

    class State(msgspec.Struct):
        """The questions asked, and the answers found."""

        questions: list[str] = msgspec.field(default_factory=list)
        answers: dict[str, str] = msgspec.field(default_factory=dict)

    state: State

    @handler
    async def research(self, msg: Research) -> str:
        """Plan, search (a journaled tool call), stream the model's answer (journaled token by token), file it."""
        if not msg.question.strip():
            raise ValueError("an empty question")
        steps = [f"search: {msg.question}", "summarise the sources", "file the answer"]
        self.emit(Planned(msg.question, steps))
        sources = await self.ctx.effect(search, msg.question, self.ctx.idempotency_key)
        stream = self.ctx.stream(llm, f"{msg.question}\nSources: {' '.join(sources)}", msg.depth > 1)
        async for _ in stream:  # readers of this actor's stream see each token once it is journaled
            pass
        answer = str(stream.result)
        self.emit(Answered(msg.question, answer, sources))
        await self.ctx.tell("Librarian/main", File(msg.question, answer))
        return answer

    @apply
    def _planned(self, ev: Planned) -> None:
        self.state.questions.append(ev.question)

    @apply
    def _answered(self, ev: Answered) -> None:
        self.state.answers[ev.question] = ev.answer


class Librarian(Actor):
    """Keeps what the research agents found."""

    class State(msgspec.Struct):
        """The summaries kept, by topic."""

        shelf: dict[str, str] = msgspec.field(default_factory=dict)

    state: State

    @handler
    async def file(self, msg: File) -> int:
        """Keep a summary; reply how many are kept."""
        self.emit(Filed(msg.topic, msg.summary))
        return len(self.state.shelf)

    @handler
    async def catalogue(self, msg: Catalogue) -> list[str]:
        """The topics kept, sorted."""
        return sorted(self.state.shelf)

    @apply
    def _filed(self, ev: Filed) -> None:
        self.state.shelf[ev.topic] = ev.summary
