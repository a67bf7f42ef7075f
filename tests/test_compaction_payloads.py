"""Compaction of an agent whose values are stored as payload chunks: the space of removed history comes back.

An agent's prompts, its model's answers (an effect's result), the events that
record them and its snapshots are all large values, stored once as chunks
(docs/payloads.md). Compaction removes the old history; the chunks only that
history named go with it, those a kept entry or snapshot still names stay, and
every kept position reads back exactly as before.
"""

from __future__ import annotations

import os

import msgspec

from actors import Actor, Retention, apply, handler
from runtime import Registry, Runtime, replay
from runtime.interfaces._check import check
from storage import Journal

from .chunks import chunk_graph
from .conversation import prose
from .test_compaction import states


class Prompt(msgspec.Struct):
    text: str


class Answered(msgspec.Struct):
    prompt: str
    answer: str


def model(prompt: str) -> str:
    """The stand-in model: an answer of about 3 KB, the same for the same prompt."""
    return prose(sum(map(ord, prompt)) * 7919 + len(prompt), 3000)


class Transcript(Actor):
    """Keeps its last two answers in its state, and its history from its second newest snapshot on."""

    class State(msgspec.Struct):
        turns: int = 0
        recent: list[str] = msgspec.field(default_factory=list)

    state: State
    snapshot_every = 4
    retention = Retention(snapshots=2)

    @handler
    async def prompt(self, msg: Prompt) -> str:
        answer: str = await self.ctx.effect(model, msg.text)
        self.emit(Answered(msg.text, answer))
        return answer

    @apply
    def _answered(self, ev: Answered) -> None:
        self.state.turns += 1
        self.state.recent = [*self.state.recent, ev.answer][-2:]


def prompt(i: int) -> str:
    """The ``i``-th prompt: 1.5 KB, every fifth the same as the first (shared by dropped and kept history)."""
    return prose(0 if i % 5 == 0 else i, 1500)


async def test_compaction_removes_the_chunks_only_removed_history_named(db_file: str) -> None:
    async with Runtime(db_file, actors=[Transcript]) as rt:
        for i in range(80):
            await rt.ask("Transcript/t", Prompt(prompt(i)))
        before = states(db_file, Transcript, "Transcript/t")
        graph = chunk_graph(db_file)
        report = await rt.compact()
        assert report.entries > 100
        after = chunk_graph(db_file)
        assert after.missing == set() and after.unreferenced == set()  # nothing dangling, nothing left over
        kept_rows = set(after.rows)
        kept = set().union(*(graph.rows[row] for row in kept_rows))
        removed = set().union(*(ids for row, ids in graph.rows.items() if row not in kept_rows))
        assert after.stored == kept  # every chunk a kept entry or snapshot names, and only those
        assert removed - kept and removed & kept  # some only removed history named; some shared
        assert not (removed - kept) & after.stored
        assert report.chunks == len(graph.stored) - len(after.stored)
        assert report.bytes_after < report.bytes_before / 3  # the chunks' pages went back too
        assert await rt.ask("Transcript/t", Prompt(prompt(0))) == model(prompt(0))  # a shared chunk, read back
    assert os.path.getsize(db_file) < report.bytes_before / 3  # once checkpointed, the file itself
    with Journal.open(db_file) as journal:
        earliest = next(iter(journal.entries("Transcript/t"))).position
        assert journal.payload_stats().dropped == 0
    kept_states = states(db_file, Transcript, "Transcript/t")
    assert {p: s for p, s in kept_states.items() if p in before} == {
        p: s for p, s in before.items() if p >= earliest
    }  # every kept position, exact
    assert check(db_file).ok  # every chunk read back, every entry and snapshot resolved
    assert replay(Journal.open(db_file), Registry([Transcript])).ok
