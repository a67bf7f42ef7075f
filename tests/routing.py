"""Actors of tests/golden/v5-routing.db, a journal written by schema version 5.

Their type names are journaled: keep them as they are."""

from __future__ import annotations

import msgspec

from actors import Actor, apply, handler


class Wait(msgspec.Struct):
    name: str


class Later(msgspec.Struct):
    to: str


class Ring(msgspec.Struct):
    label: str


class Got(msgspec.Struct):
    value: str


class Waiter(Actor):
    """Waits on a promise; takes timers."""

    class State(msgspec.Struct):
        got: list[str] = msgspec.field(default_factory=list)

    @handler
    async def wait(self, msg: Wait) -> str:
        value: str = await self.ctx.promise(msg.name)
        self.emit(Got(value))
        return value

    @handler
    async def ring(self, msg: Ring) -> str:
        self.emit(Got("rang:" + msg.label))
        return msg.label

    @apply
    def _got(self, ev: Got) -> None:
        self.state.got.append(ev.value)


class Asker(Actor):
    """Asks a Waiter (durably, actor to actor) and schedules timers."""

    class State(msgspec.Struct):
        got: list[str] = msgspec.field(default_factory=list)

    @handler
    async def wait(self, msg: Wait) -> str:
        reply: str = await self.ctx.ask("Waiter/w", msg)
        self.emit(Got(reply))
        return reply

    @handler
    async def later(self, msg: Later) -> str:
        return self.ctx.schedule(3600, msg.to, Ring("an hour later"))

    @apply
    def _got(self, ev: Got) -> None:
        self.state.got.append(ev.value)
