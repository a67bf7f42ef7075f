"""Tells of one loop tick: their inbox rows commit as one unit, and their callers share one future.

A tell is put in its actor's mailbox at once, before its inbox row commits
(its step may even run in the same round): the writer commits in submission
order, so the step that consumes a message lands with its inbox row or after
it, and a step that finds its row missing is dropped (the message was never
accepted). One future per tick instead of one per tell is most of what makes
tells cheap (see ``docs/performance.md``).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

from storage import Done, InboxRow, Op, Outcome, Unit

from ._cell import Cell, Msg
from ._mailboxes import Mailboxes


class _Shared(asyncio.Future[None]):
    """A future many tells await together; one caller's cancellation must not cancel it."""

    def cancel(self, msg: Any = None) -> bool:
        return False


class _Tick:
    """The inbox rows of one loop tick's tells."""

    __slots__ = ("future", "keys", "msgs", "remote", "rows", "top")

    def __init__(self, future: _Shared) -> None:
        self.future = future
        self.remote: list[tuple[int, str]] = []
        self.rows: list[InboxRow] = []
        self.keys: list[Op] = []
        self.msgs: list[tuple[Cell, Msg]] = []
        self.top = 0


class Ingress:
    """Collects a tick's tells; the scheduler hands them to the writer with the steps consuming them."""

    def __init__(self, loop: asyncio.AbstractEventLoop, mailboxes: Mailboxes) -> None:
        self._loop = loop
        self._mailboxes = mailboxes
        self._tick: _Tick | None = None
        self.routed: Callable[[list[tuple[int, str]]], None] | None = None
        """With many nodes: told ``(id, target)`` of the tells committed for actors other nodes own."""
        self.released: Callable[[int], None] | None = None
        """With many nodes: told the id of a tell dropped from its mailbox because its commit failed."""

    def add(self, cell: Cell, msg: Msg, row: InboxRow, key: Op | None) -> asyncio.Future[None]:
        """Accept ``msg`` (its inbox ``row``, and its idempotency ``key`` record) for this tick's unit.

        The message goes into its mailbox now; the returned future (shared by
        the tick's tells) says whether the unit committed.
        """
        tick = self._tick
        if tick is None:
            tick = self._tick = _Tick(_Shared(loop=self._loop))
        tick.rows.append(row)
        tick.msgs.append((cell, msg))
        tick.top = msg.step
        if key is not None:
            tick.keys.append(key)
        msg.inbox = True
        msg.accepted = tick.future
        self._mailboxes.deliver(cell, msg)
        return tick.future

    def add_remote(self, target: str, msg: Msg, row: InboxRow, key: Op | None) -> asyncio.Future[None]:
        """Accept a tell for an actor another node owns: its inbox row only; its owner is woken once it commits."""
        tick = self._tick
        if tick is None:
            tick = self._tick = _Tick(_Shared(loop=self._loop))
        if not tick.rows:
            self._mailboxes.schedule()  # no mailbox is touched: the round that takes the tick must be asked for
        tick.rows.append(row)
        tick.remote.append((msg.step, target))
        tick.top = msg.step
        if key is not None:
            tick.keys.append(key)
        return tick.future

    def take(self) -> tuple[list[Unit], Done] | None:
        """This tick's unit and its callback, or None if no tell came."""
        tick, self._tick = self._tick, None
        if tick is None:
            return None
        return [Unit(inbox=tick.rows, ops=tick.keys, top=tick.top)], functools.partial(self._done, tick)

    def _done(self, tick: _Tick, outcomes: list[Outcome]) -> None:
        error = outcomes[0]
        for cell, msg in tick.msgs:
            msg.accepted = None
            if error is not None:
                msg.dropped = True
                if msg in cell.mailbox:
                    cell.mailbox.remove(msg)
                    self._mailboxes.consumed()
                    if self.released is not None:
                        # Not held here any more. A commit of unknown outcome may have landed
                        # all the same: then the node's poll must find the row and run it.
                        self.released(msg.step)
        if error is not None:
            tick.future.set_exception(error)
        else:
            if tick.remote and self.routed is not None:
                self.routed(tick.remote)
            tick.future.set_result(None)
