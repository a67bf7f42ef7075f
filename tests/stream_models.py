"""Actors that stream, for the stream tests (and a ``serve`` child: ``tests.stream_models``)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import anyio
import msgspec

from actors import Actor, EffectError, Retry, apply, handler

TRACE = os.environ.get("STELE_STREAM_TRACE")
"""A file each real call of ``words`` appends a line to (the kill tests count them)."""


class Write(msgspec.Struct):
    """Stream ``words`` words, one every ``pace`` seconds."""

    words: int
    pace: float = 0.0
    tag: str = ""


class Wrote(msgspec.Struct):
    """The handler saw one chunk (an event per chunk: replays and restarts must not double them)."""

    chunk: str


class Done(msgspec.Struct):
    """The stream's assembled result."""

    text: str


async def words(count: int, pace: float, tag: str = "") -> AsyncIterator[str]:
    """``count`` words ``w0 w1 ...``, the same in every attempt."""
    if TRACE:
        with open(TRACE, "a") as trace:
            trace.write(f"{tag}\n")
    for i in range(count):
        if pace:
            await anyio.sleep(pace)
        yield f"w{i} "


class Writer(Actor):
    """Streams words, emitting an event per chunk it reads and one with the result."""

    class State(msgspec.Struct):
        """Chunks seen and texts kept."""

        chunks: int = 0
        texts: list[str] = msgspec.field(default_factory=list)

    state: State

    @handler
    async def write(self, msg: Write) -> str:
        """Stream the words; reply with the text."""
        stream = self.ctx.stream(words, msg.words, msg.pace, msg.tag, retry=Retry(max_attempts=3, initial=0.01))
        try:
            async for chunk in stream:
                self.emit(Wrote(chunk))
        except EffectError as exc:
            return f"failed: {exc}"
        self.emit(Done(stream.result))
        return str(stream.result)

    @apply
    def _wrote(self, ev: Wrote) -> None:
        self.state.chunks += 1

    @apply
    def _done(self, ev: Done) -> None:
        self.state.texts.append(ev.text)
