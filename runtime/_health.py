"""The journal's health: backpressure while commits fail, prompt recovery, and
settling commits of unknown outcome.

A full disk or a failing one makes commits fail. Then new messages are refused
at once (``BackpressureError``) instead of queueing in memory, except one probe
every ``PROBE_INTERVAL``; the first commit that succeeds again wakes whatever
waits for the journal. A commit whose outcome is unknown (its WAL frames may
come back after a crash) is settled by another commit before its actor runs
anything again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import anyio
import anyio.to_thread

from actors import BackpressureError, JournalError, ReplyUnavailableError
from storage import Backoff, PutMeta, Unit

from ._cell import Cell, Msg
from ._mailboxes import Mailboxes
from ._writes import Writes

log = logging.getLogger("stele.runtime")

PROBE_INTERVAL = 0.5
"""While the journal fails, one new message every this many seconds tries a commit."""


class JournalHealth:
    """Whether commits succeed, and what the runtime does while they do not."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        writes: Writes,
        mailboxes: Mailboxes,
        *,
        clock: Callable[[], float],
        spawn: Callable[..., None],
        closing: Callable[[], bool],
    ) -> None:
        self._loop = loop
        self._writes = writes
        self._mailboxes = mailboxes
        self._clock = clock
        self._spawn: Callable[..., None] = spawn
        self._closing = closing
        self.processed: Callable[[int], None] | None = None
        """With many nodes: told the id of a message found processed (this node no longer holds it)."""
        self._probe_at = 0.0  # while the journal fails, when the next message may try it
        self._was_failing = False  # writer thread only
        self.refusing = False
        """Whether commits failed in the last batch: new messages are refused (but for probes)."""
        self._back = asyncio.Event()  # set (and replaced) when commits succeed again

    @property
    def failing(self) -> str | None:
        """Why commits are failing right now (a full disk, an I/O error), or None while they succeed."""
        backend = self._writes.backend
        failing = backend.failing if backend is not None else None
        return str(failing) if failing is not None else None

    def admit(self) -> None:
        """Refuse a new message while commits fail, but for one probe every ``PROBE_INTERVAL``."""
        if not self.refusing:
            return
        backend = self._writes.backend
        failing = backend.failing if backend is not None else None
        if failing is None:
            return
        # Refused at once rather than queued in memory to wait; one message gets
        # through every PROBE_INTERVAL to find out whether the disk is back
        # (steps retrying their commits find out too).
        now = time.monotonic()
        if now < self._probe_at:
            raise BackpressureError(f"the journal cannot be written ({failing}); nothing was accepted; retry later")
        self._probe_at = now + PROBE_INTERVAL

    def watch(self) -> None:
        """After each batch (writer thread): notice commits succeeding again."""
        backend = self._writes.backend
        failing = backend is not None and backend.failing is not None
        # Set from the writer's thread; the loop reads it on every message (a
        # bool assignment is atomic): set here, a refusal is one probe away.
        self.refusing = failing
        if self._was_failing and not failing:
            self._loop.call_soon_threadsafe(self._recovered)
        self._was_failing = failing

    def _recovered(self) -> None:
        """Commits succeed again: what waits for the journal goes on now, not after its back-off."""
        log.warning("journal commits succeed again")
        self._back.set()
        self._back = asyncio.Event()
        for cell in self._mailboxes:
            if cell.mailbox and not cell.busy and not cell.loading:
                cell.retry.reset()
                cell.failed = None  # a load that failed on the disk is tried again
                self._mailboxes.make_ready(cell)

    def after_unknown_commit(self, cell: Cell, delay: float, msg: Msg | None = None) -> None:
        """Hold ``cell`` until the journal is settled (see :meth:`_settle`); ``msg``: the message whose
        step's commit is unknown, back at the head of the mailbox."""
        cell.busy = True  # nothing of this actor runs until then
        self._spawn(self._settle, cell, max(delay, 0.05), msg)

    async def _settle(self, cell: Cell, delay: float, msg: Msg | None = None) -> None:
        """After a commit that may or may not have landed, commit something else first.

        The unknown commit's WAL frames may still be in the file, where a crash
        would bring them back; a later successful commit overwrites them. Until
        one does, running the step again could run its effects again although
        their results may yet turn out journaled (G3).
        """
        backoff = Backoff(first=delay)
        wait = backoff.next()
        while not self._closing():
            with anyio.move_on_after(wait):
                await self._back.wait()  # or sooner: another commit just succeeded
            try:
                await self._writes.write(Unit(ops=[PutMeta("settled_at", self._clock())]))
            except JournalError as exc:
                log.warning("%s waits for the journal to accept a commit: %s", cell.address, exc)
                wait = backoff.next()
            else:
                break
        if msg is not None and msg.inbox and cell.mailbox and cell.mailbox[0] is msg and not self._closing():
            await self._landed(cell, msg)
        cell.busy = False
        if cell.mailbox and not self._closing():
            self._mailboxes.make_ready(cell)

    async def _landed(self, cell: Cell, msg: Msg) -> None:
        """Drop ``msg`` if the unknown commit turned out to have consumed it: its step ran to the end,
        and running it again would run its effects again (G3)."""
        backend = self._writes.backend
        assert backend is not None
        try:
            _, pending = await anyio.to_thread.run_sync(backend.key_status, "", msg.step)
        except JournalError as exc:  # cannot tell: the step runs again, and fails alone if it had landed
            log.warning("%s: cannot tell whether step %d landed: %s", cell.address, msg.step, exc)
            return
        if pending or not cell.mailbox or cell.mailbox[0] is not msg:
            return
        log.warning("%s: step %d's unknown commit had landed: its message is processed, not run again",
                    cell.address, msg.step)  # fmt: skip
        cell.mailbox.popleft()
        self._mailboxes.consumed()
        if self.processed is not None:
            self.processed(msg.step)
        if msg.waiter is not None and not msg.waiter.done():
            msg.waiter.set_exception(
                ReplyUnavailableError(f"{cell.address} processed the message; its reply is in the journal only")
            )
