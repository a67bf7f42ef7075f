"""Poison messages: a message that keeps failing becomes a dead letter, and its
actor carries on.

A crash leaves no trace of a step that had not reached its first effect, so
the attempt of the first message each actor runs after a restart is marked in
the inbox before it runs; the message's own failures count too (a value that
cannot be stored, a broken step; not the journal's trouble). After ``max_attempts``
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

import asyncio
import logging
from collections.abc import Callable

import anyio
import anyio.to_thread
import msgspec

import storage
from actors import HandlerError, SteleError
from storage import Bury, DropDeadLetter, MarkAttempt, Op, PutPromise, RecordKey, Revive, Unit

from ._cell import Cell, Msg
from ._mailboxes import Mailboxes
from ._promises import Promises
from ._records import ReplyRecord
from ._registry import Registry
from ._writes import Writes

log = logging.getLogger("stele.runtime")

_encode = msgspec.msgpack.Encoder().encode


class DeadLetters:
    """Counting attempts, burying, listing, retrying and dropping dead letters."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        writes: Writes,
        mailboxes: Mailboxes,
        promises: Promises,
        registry: Registry,
        *,
        clock: Callable[[], float],
        max_attempts: int,
        fence: Callable[[Cell], tuple[int, int] | None],
        deliver: Callable[[str, Msg], None],
    ) -> None:
        """``fence``: the lease a write about ``cell``'s current message must still hold
        (many nodes: a node that lost the actor counts and buries nothing). ``deliver``: where a
        retried dead letter goes (many nodes: to the node that owns its actor)."""
        self._loop = loop
        self._writes = writes
        self._mailboxes = mailboxes
        self._promises = promises
        self._registry = registry
        self._clock = clock
        self.max_attempts = max_attempts
        self._fence = fence
        self._deliver = deliver

    async def count_attempt(self, cell: Cell, msg: Msg) -> None:
        """Mark one more attempt of a message found in the inbox at start, before it runs.

        ``cell`` is busy with ``msg`` as its current message; whatever
        happens, it goes back to the head (nothing newer overtakes it, G4) or
        into the dead letters.
        """
        if msg.attempts + 1 > self.max_attempts:
            reason = f"the process stopped during {msg.attempts} attempts to process it after restarts"
            msg.attempts += 1  # this one, refused
            await self.bury(cell, msg, reason)
            return
        try:
            await self._writes.write(Unit(ops=[MarkAttempt(msg.step, msg.attempts + 1)], fence=self._fence(cell)))
        except SteleError as exc:
            # The journal's trouble, not the message's: try again later, in place. (A lost
            # lease too: by then the scheduler sees the actor moved and drops the message here.)
            log.warning("%s: cannot mark the attempt of inbox message %d: %s", cell.address, msg.step, exc)
            delay = cell.retry.next()
        else:
            msg.attempts += 1
            msg.recovered = False
            for later in cell.mailbox:  # not under way at the stop: see the module docstring
                later.recovered = False
            delay = 0.0
        self._release(cell, msg, delay)

    async def bury(self, cell: Cell, msg: Msg, reason: str) -> None:
        """Move ``msg`` (``cell``'s current message, ``cell`` busy) from the inbox to the dead letters.

        Whoever waits for its reply is told: the caller of an ask, a repeated
        ask under its idempotency key (the error is recorded as the key's
        reply), and an actor that asked it (its promise is resolved with the
        error). If the journal cannot take the dead letter now, the message
        goes back to the head of its mailbox and the next attempt buries it.
        """
        at = self._clock()
        error = ReplyRecord(False, error_type="DeadLetter", error=f"the message became a dead letter: {reason}")
        reply = _encode(error)
        ops: list[Op] = [Bury(msg.step, msg.attempts, reason, at)]
        if msg.idempotency_key is not None:
            ops.append(RecordKey(msg.idempotency_key, cell.address, msg.step, reply, at, "ask", msg.handler.name))
        if msg.reply_to is not None:
            ops.append(PutPromise(*msg.reply_to, reply, at, replace=True))
        try:
            await self._writes.write(Unit(ops=ops, fence=self._fence(cell)))
        except SteleError as exc:  # as for an attempt: in place, or dropped here if the actor moved
            log.warning("%s: cannot write dead letter %d yet: %s", cell.address, msg.step, exc)
            self._release(cell, msg, cell.retry.next())
            return
        log.error("inbox message %d to %s is now a dead letter: %s", msg.step, cell.address, reason)
        self._mailboxes.consumed()
        if msg.waiter is not None and not msg.waiter.done():
            msg.waiter.set_exception(HandlerError(cell.address, error.error_type, error.error))
        if msg.reply_to is not None:
            self._promises.wake(msg.reply_to, reply)
        self._release(cell, None, 0.0)

    def _release(self, cell: Cell, msg: Msg | None, delay: float) -> None:
        """``cell`` is free again, with ``msg`` (if any) back at the head of its mailbox."""
        if msg is not None:
            cell.mailbox.appendleft(msg)
        cell.busy = False
        cell.current = None
        self._loop.call_later(delay, self._mailboxes.make_ready, cell)

    async def list(self) -> list[storage.DeadLetter]:
        """Messages taken out of their actors' way after failing ``max_attempts`` times."""
        backend = self._writes.backend
        assert backend is not None
        return await anyio.to_thread.run_sync(backend.dead_letters)

    async def retry(self, letter_id: int) -> None:
        """Put a dead letter back in its actor's inbox, attempts reset."""
        letter = await self._find(letter_id)
        # Decoded first: a letter today's code cannot deliver stays a dead letter.
        desc, _ = self._registry.resolve(letter.address)
        info = self._registry.handler_named(desc, letter.handler)
        message = self._registry.codec.decode(letter.type, letter.payload)
        await self._writes.write(Unit(ops=[Revive(letter_id, self._clock())]))
        revived = Msg(letter.id, info, message, letter.type, letter.payload, None, True, letter.sender)
        self._deliver(letter.address, revived)

    async def drop(self, letter_id: int) -> None:
        """Forget a dead letter for good."""
        await self._find(letter_id)
        await self._writes.write(Unit(ops=[DropDeadLetter(letter_id)]))

    async def _find(self, letter_id: int) -> storage.DeadLetter:
        for letter in await self.list():
            if letter.id == letter_id:
                return letter
        raise SteleError(f"no dead letter {letter_id}")
