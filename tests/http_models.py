"""Actor classes for the HTTP and command-line tests: one that waits, one with varied field types."""

from __future__ import annotations

import enum

import msgspec

from actors import Actor, apply, handler


class Wait(msgspec.Struct):
    """Wait for the promise ``name``: the step is durable from then on (it is journaled first)."""

    name: str = "go"


class Waiter(Actor):
    """Holds an ask open for as long as the test wants (until its promise is resolved)."""

    @handler
    async def wait(self, msg: Wait) -> str:
        value = await self.ctx.promise(msg.name)
        return str(value)


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class Point(msgspec.Struct):
    x: float
    y: float = 0.0


class Note(msgspec.Struct):
    """A message of many field types, for the fuzzer."""

    text: str
    tags: list[str] = msgspec.field(default_factory=list)
    count: int = 0
    ratio: float | None = None
    flag: bool = False
    colour: Colour = Colour.RED
    where: Point | None = None
    extra: dict[str, int] = msgspec.field(default_factory=dict)


class Fail(msgspec.Struct):
    text: str


class Noted(msgspec.Struct):
    text: str


class Notes(Actor):
    """Keeps text it is sent; ``fail`` raises with the text it is given (journal text for the CLI tests)."""

    class State(msgspec.Struct):
        texts: list[str] = msgspec.field(default_factory=list)

    state: State

    @handler
    async def add(self, msg: Note) -> int:
        self.emit(Noted(msg.text))
        return len(self.state.texts)

    @handler
    async def fail(self, msg: Fail) -> None:
        raise ValueError(msg.text)

    @apply
    def _noted(self, ev: Noted) -> None:
        self.state.texts.append(ev.text)
