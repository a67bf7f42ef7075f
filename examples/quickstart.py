"""Stele in one file: a research agent whose every step is journaled.

Run it twice: the second run finds the first run's state in the journal.

    python examples/quickstart.py [JOURNAL]
"""

from __future__ import annotations

import hashlib
import sys

import anyio
import msgspec

from actors import Actor, HandlerError, apply, handler
from runtime import Runtime
from storage import Journal


class Research(msgspec.Struct):
    question: str


class Answered(msgspec.Struct):
    question: str
    answer: str
    sources: list[str]


class Stats(msgspec.Struct):
    pass


def search_tool(question: str) -> list[str]:
    """A tool call (here: offline and deterministic)."""
    digest = hashlib.sha256(question.encode()).hexdigest()
    return [f"https://example.org/{digest[i : i + 8]}" for i in (0, 8)]


async def llm(prompt: str) -> str:
    """A stand-in for a language model, so the example runs without network or keys."""
    await anyio.sleep(0.01)
    words = prompt.split()
    return f"In short: {' '.join(words[:6])}… (from {len(words)} words of context)"


class ResearchAgent(Actor):
    """Plans, calls a tool and an LLM through journaled effects, remembers answers."""

    class State(msgspec.Struct):
        answered: list[str] = msgspec.field(default_factory=list)

    state: State

    @handler
    async def research(self, msg: Research) -> str:
        if not msg.question.strip():
            raise ValueError("an empty question")
        sources = await self.ctx.effect(search_tool, msg.question)
        answer = await self.ctx.effect(llm, f"{msg.question} sources: {' '.join(sources)}")
        self.emit(Answered(msg.question, answer, sources))
        return answer

    @handler
    async def stats(self, msg: Stats) -> int:
        return len(self.state.answered)

    @apply
    def _answered(self, ev: Answered) -> None:
        self.state.answered.append(ev.question)


async def main(path: str) -> None:
    replica = path + "-replica"  # the embedded default: a local directory; an s3:// URL works the same
    async with Runtime(path, actors=[ResearchAgent], replicate=replica) as rt:
        before = await rt.ask("ResearchAgent/ada", Stats())
        print(f"journal {path}: ResearchAgent/ada had answered {before} question(s) before this run")
        answer = await rt.ask("ResearchAgent/ada", Research("why is the sky blue"))
        print(f"ask   -> {answer}")
        await rt.tell("ResearchAgent/ada", Research("what is a durable actor"))
        print("tell  -> accepted (durable in the inbox)")
        try:
            await rt.ask("ResearchAgent/ada", Research("  "))
        except HandlerError as exc:
            print(f"error -> {exc}")
        print(f"stats -> {await rt.ask('ResearchAgent/ada', Stats())} answered in all")
        await rt.tell("ResearchAgent/ada", Research("what is replicated"), durability="replicated")
        print(f"tell  -> accepted and confirmed in the replica {replica}")
        status = rt.replication
        assert status is not None
        print(
            f"replication: {status.commits_at_risk} commit(s) at risk, oldest {status.oldest_at_risk_s:.2f} s; "
            f"journal position {status.replicated_position} confirmed in the replica"
        )

    print("\nwhat the journal recorded for this run's last steps:")
    with Journal.open(path) as journal:
        entries = list(journal.entries("ResearchAgent/ada"))
        for entry in entries[-12:]:
            data = entry.decoded()
            summary = {k: v for k, v in data.items() if k not in ("seed", "body")} if isinstance(data, dict) else data
            print(f"  #{entry.position:<5} seq {entry.seq:<4} {entry.kind:<8} {entry.type:<30} {str(summary)[:70]}")


if __name__ == "__main__":
    anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "stele-quickstart.db")
