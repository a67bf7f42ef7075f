"""A long-conversation agent: every model call carries the whole conversation.

Shared by the payload tests and the benchmarks. The state holds the
conversation; each ``say`` appends the user's turn, calls the model (a
journaled effect) with every turn so far, appends its answer (a few KB) and
replies with it; a snapshot every 10 events. Without payloads stored once, each
answer is written three times (effect, event, reply) and every snapshot writes
the whole conversation again: space quadratic in its length.
"""

from __future__ import annotations

import random

import msgspec

from actors import Actor, apply, handler

_VOCABULARY = ["".join(random.Random(i).choices("abcdefghijklmnopqrstuvwxyz", k=2 + i % 9)) for i in range(5000)]


def prose(seed: int, size: int) -> str:
    """About ``size`` characters of words drawn at random (compresses like text, not like zeros)."""
    rng = random.Random(seed)
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(_VOCABULARY)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[:size]


class Turn(msgspec.Struct, frozen=True):
    role: str
    content: str


class Say(msgspec.Struct):
    text: str


class Said(msgspec.Struct):
    text: str


class Answered(msgspec.Struct):
    text: str


def answer_size(turns: int) -> int:
    """The length of the model's answer after ``turns`` turns: 2 to 4 KB."""
    return 2000 + (turns * 617) % 2000


def model(conversation: list[Turn]) -> str:
    """The stand-in model: an answer of a few KB that depends on the whole conversation it is given."""
    return prose(len(conversation) * 7919 + len(conversation[-1].content), answer_size(len(conversation)))


class Chat(Actor):
    """An agent holding its conversation in its state."""

    class State(msgspec.Struct):
        turns: list[Turn] = msgspec.field(default_factory=list)

    state: State
    snapshot_every = 10

    @handler
    async def say(self, msg: Say) -> str:
        self.emit(Said(msg.text))
        answer: str = await self.ctx.effect(model, list(self.state.turns))  # the prompt: the whole conversation
        self.emit(Answered(answer))
        return answer

    @apply
    def _said(self, ev: Said) -> None:
        self.state.turns.append(Turn("user", ev.text))

    @apply
    def _answered(self, ev: Answered) -> None:
        self.state.turns.append(Turn("assistant", ev.text))


def question(i: int) -> str:
    """The user's ``i``-th turn (a sentence or two)."""
    return prose(1_000_003 + i, 120 + i % 80)
