"""An agent whose effect returns 50 MB and whose event holds another 50 MB (served by
``tests/test_big_values.py``, and by ``python -m runtime serve tests.big_values``)."""

from __future__ import annotations

import random

import msgspec

from actors import Actor, apply, handler

SIZE = 50 * 1024 * 1024


def produce(seed: int) -> str:
    """``SIZE`` characters, different for every seed (hex: compresses to about half)."""
    return random.Random(seed).randbytes(SIZE // 2).hex()


def download(seed: int) -> str:
    """The effect: a 50 MB result."""
    return produce(seed)


class Fetch(msgspec.Struct):
    seed: int


class Kept(msgspec.Struct):
    text: str


class Big(Actor):
    class State(msgspec.Struct):
        sizes: list[int] = msgspec.field(default_factory=list)

    state: State

    @handler
    async def fetch(self, msg: Fetch) -> int:
        result: str = await self.ctx.effect(download, msg.seed)
        self.emit(Kept(produce(msg.seed + 1)))  # a 50 MB event of its own
        return len(result)

    @apply
    def _kept(self, ev: Kept) -> None:
        self.state.sizes.append(len(ev.text))
