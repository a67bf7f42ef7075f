"""The journal's health: backpressure while commits fail, prompt recovery, and
settling commits of unknown outcome. A mixin of :class:`~runtime.Runtime`.

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
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import anyio

from actors import BackpressureError, JournalError
from storage import PutMeta, Store, Unit

from ._cell import Cell

log = logging.getLogger("stele.runtime")

PROBE_INTERVAL = 0.5
"""While the journal fails, one new message every this many seconds tries a commit."""

RETRY_MAX = 5.0
"""The longest back-off before a failed step (or a settling commit) is tried again."""


class JournalHealth:
    """``rt.journal_failing``, and what the runtime does while it is set."""

    clock: Callable[[], float]
    _cells: dict[str, Cell]
    _closing: bool

    if TYPE_CHECKING:  # provided by Runtime

        @property
        def loop(self) -> asyncio.AbstractEventLoop: ...

        @property
        def store(self) -> Store: ...

        _store: Store | None

        async def _write(self, unit: Unit) -> None: ...

        def _make_ready(self, cell: Cell) -> None: ...

        def spawn(self, fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None: ...

    def __init__(self) -> None:
        self._probe_at = 0.0  # while the journal fails, when the next message may try it
        self._journal_was_failing = False  # writer thread only
        self._journal_back = asyncio.Event()  # set (and replaced) when commits succeed again

    @property
    def journal_failing(self) -> str | None:
        """Why commits are failing right now (a full disk, an I/O error), or None while they succeed.

        While it is set, new messages are refused with ``BackpressureError``
        except one probe every ``PROBE_INTERVAL``; it clears at the next commit
        that succeeds.
        """
        failing = self._store.failing if self._store is not None else None
        return str(failing) if failing is not None else None

    def _admit_while_failing(self) -> None:
        failing = self.store.failing
        if failing is None:
            return
        # Refused at once rather than queued in memory to wait; one message gets
        # through every PROBE_INTERVAL to find out whether the disk is back
        # (steps retrying their commits find out too).
        now = time.monotonic()
        if now < self._probe_at:
            raise BackpressureError(f"the journal cannot be written ({failing}); nothing was accepted; retry later")
        self._probe_at = now + PROBE_INTERVAL

    def _watch_journal(self) -> None:
        # Writer thread, after each batch: notice commits succeeding again.
        failing = self._store is not None and self._store.failing is not None
        if self._journal_was_failing and not failing:
            self.loop.call_soon_threadsafe(self._journal_recovered)
        self._journal_was_failing = failing

    def _journal_recovered(self) -> None:
        """Commits succeed again: what waits for the journal goes on now, not after its back-off."""
        log.warning("journal commits succeed again")
        self._journal_back.set()
        self._journal_back = asyncio.Event()
        for cell in self._cells.values():
            if cell.mailbox and not cell.busy and not cell.loading:
                cell.retry_delay = 0.0
                cell.failed = None  # a load that failed on the disk is tried again
                self._make_ready(cell)

    def _after_unknown_commit(self, cell: Cell, delay: float) -> None:
        """Hold ``cell`` until the journal is settled (see ``_settle_unknown``)."""
        cell.busy = True  # nothing of this actor runs until then
        self.spawn(self._settle_unknown, cell, max(delay, 0.05))

    async def _settle_unknown(self, cell: Cell, delay: float) -> None:
        """After a commit that may or may not have landed, commit something else first.

        The unknown commit's WAL frames may still be in the file, where a crash
        would bring them back; a later successful commit overwrites them. Until
        one does, running the step again could run its effects again although
        their results may yet turn out journaled (G3).
        """
        settle = Unit(ops=[PutMeta("settled_at", self.clock())])
        while not self._closing:
            with anyio.move_on_after(delay):
                await self._journal_back.wait()  # or sooner: another commit just succeeded
            try:
                await self._write(settle)
            except JournalError as exc:
                log.warning("%s waits for the journal to accept a commit: %s", cell.address, exc)
                delay = min(RETRY_MAX, delay * 2)
            else:
                break
        cell.busy = False
        if cell.mailbox and not self._closing:
            self._make_ready(cell)
