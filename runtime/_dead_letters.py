"""Poison messages: a message that keeps failing becomes a dead letter, and its
actor carries on. A mixin of :class:`~runtime.Runtime`.

A crash leaves no trace of a step that had not reached its first effect, so
the attempt of the first message each actor runs after a restart is marked in
the inbox before it runs; failed commits count too. After ``max_attempts``
the message moves to the ``dead_letters`` table with the reason.

Only the first: an actor runs one step at a time, in mailbox order, so the
message it was running when the process stopped is the first of its inbox at
the next start (its open step, if it reached an effect, is resumed first).
The messages behind it had not started; marking each of them too would cost
a commit per message of a backlog, for nothing. Should one of them stop the
process in turn, it is the first at the next start, and counted from there,
as a new message is counted from its first restart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

import storage
from actors import SteleError
from storage import Store, Unit

from ._cell import Cell, Msg
from ._registry import Registry

log = logging.getLogger("stele.runtime")

BURY = (
    "INSERT INTO dead_letters(id, target, handler, type, payload, sender, attempts, reason, at) "
    "SELECT id, target, handler, type, payload, sender, ?, ?, ? FROM inbox WHERE id = ?"
)
REVIVE = (
    "INSERT INTO inbox(id, target, handler, type, payload, due, idempotency_key, attempts, sender, at) "
    "SELECT id, target, handler, type, payload, NULL, NULL, 0, sender, ? FROM dead_letters WHERE id = ?"
)


class DeadLetters:
    """Counting attempts, burying, listing, retrying and dropping dead letters."""

    registry: Registry
    clock: Callable[[], float]
    max_attempts: int
    _pending: int

    if TYPE_CHECKING:  # provided by Runtime

        @property
        def store(self) -> Store: ...

        async def _write(self, unit: Unit) -> None: ...

        def _check_open(self) -> None: ...

        def _cell(self, address: str) -> Cell: ...

        def _make_ready(self, cell: Cell) -> None: ...

        def spawn(self, fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None: ...

    async def _count_attempt(self, cell: Cell, msg: Msg) -> None:
        try:
            msg.attempts += 1
            if msg.attempts > self.max_attempts:
                self._pending -= 1
                await self._bury(
                    msg, f"the process stopped during {msg.attempts - 1} attempts to process it after restarts"
                )
                return
            await self._write(Unit(ops=[("UPDATE inbox SET attempts = ? WHERE id = ?", (msg.attempts, msg.step))]))
            msg.recovered = False
            for later in cell.mailbox:  # not under way at the stop: see the module docstring
                later.recovered = False
            cell.mailbox.appendleft(msg)
        finally:
            cell.busy = False
            self._make_ready(cell)

    async def _bury(self, msg: Msg, reason: str) -> None:
        """Move ``msg`` from the inbox to the dead letters, with why."""
        log.error("inbox message %d to %s is now a dead letter: %s", msg.step, msg.handler.name, reason)
        if msg.waiter is not None and not msg.waiter.done():
            msg.waiter.set_exception(SteleError(f"the message became a dead letter: {reason}"))
        await self._write(
            Unit(
                ops=[
                    (BURY, (msg.attempts, reason, self.clock(), msg.step)),
                    ("DELETE FROM inbox WHERE id = ?", (msg.step,)),
                ]
            )
        )

    async def dead_letters(self) -> list[storage.DeadLetter]:
        """Messages taken out of their actors' way after failing ``max_attempts`` times."""
        self._check_open()
        return await anyio.to_thread.run_sync(self.store.dead_letters)

    async def retry_dead_letter(self, letter_id: int) -> None:
        """Put a dead letter back in its actor's inbox, attempts reset."""
        letter = await self._dead_letter(letter_id)
        await self._write(
            Unit(
                ops=[
                    (REVIVE, (self.clock(), letter_id)),
                    ("DELETE FROM dead_letters WHERE id = ?", (letter_id,)),
                ]
            )
        )
        desc, _ = self.registry.resolve(letter.address)
        info = self.registry.handler_named(desc, letter.handler)
        message = self.registry.codec.decode(letter.type, letter.payload)
        cell = self._cell(letter.address)
        cell.mailbox.append(Msg(letter.id, info, message, letter.type, letter.payload, None, True, letter.sender))
        self._pending += 1
        self._make_ready(cell)

    async def drop_dead_letter(self, letter_id: int) -> None:
        """Forget a dead letter for good."""
        await self._dead_letter(letter_id)
        await self._write(Unit(ops=[("DELETE FROM dead_letters WHERE id = ?", (letter_id,))]))

    async def _dead_letter(self, letter_id: int) -> storage.DeadLetter:
        self._check_open()
        for letter in await self.dead_letters():
            if letter.id == letter_id:
                return letter
        raise SteleError(f"no dead letter {letter_id}")
