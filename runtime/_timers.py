"""Durable timers: scheduled messages that wait in the inbox until they are due.

A timer is an inbox row with a due time, committed with the step that
scheduled it. The runtime keeps the pending ones in a heap and delivers each
to its actor's mailbox once the clock reaches its due time: never early;
after downtime, at once. Time comes from an injectable clock, so tests can
run an hour of timers in milliseconds with :class:`VirtualClock`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Callable

import anyio

from ._cell import Msg

log = logging.getLogger("stele.runtime")


class VirtualClock:
    """A clock that moves only when told to; ``Runtime(clock=VirtualClock())``."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._moved = asyncio.Event()

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward and wake whatever waits for it."""
        self._now += seconds
        self._moved.set()
        self._moved = asyncio.Event()

    async def sleep_until(self, when: float, wake: asyncio.Event) -> None:
        """Return when the clock reaches ``when`` or ``wake`` is set."""
        while self._now < when and not wake.is_set():
            moved = asyncio.ensure_future(self._moved.wait())
            woken = asyncio.ensure_future(wake.wait())
            await asyncio.wait({moved, woken}, return_when=asyncio.FIRST_COMPLETED)
            moved.cancel()
            woken.cancel()


class Timers:
    """The pending timers of one runtime."""

    def __init__(self, clock: Callable[[], float], deliver: Callable[[str, Msg], None]) -> None:
        self._clock = clock
        self._deliver = deliver
        self._heap: list[tuple[float, int, str, Msg]] = []
        self._by_id: dict[str, Msg] = {}
        self._order = itertools.count()
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, address: str, msg: Msg) -> None:
        """Keep ``msg`` (committed, with ``due`` and ``timer_id``) until it is due."""
        assert msg.due is not None and msg.timer_id is not None
        if msg.timer_id in self._by_id:
            return  # pending already (a node's poll reads every pending timer of its shards again)
        heapq.heappush(self._heap, (msg.due, next(self._order), address, msg))
        self._by_id[msg.timer_id] = msg
        self._wake.set()

    def get(self, timer_id: str) -> Msg | None:
        """The pending timer ``timer_id`` (not cancelled), or None."""
        msg = self._by_id.get(timer_id)
        return None if msg is None or msg.cancelled else msg

    def forget(self, timer_id: str) -> None:
        """A cancellation committed: the timer is gone for good.

        Its heap entry stays until it would have been due (a heap cannot
        drop an entry from its middle cheaply); once they are most of the
        heap, it is rebuilt without them, so cancelled far-future timers
        cannot pile up in memory.
        """
        if self._by_id.pop(timer_id, None) is not None and len(self._heap) > 2 * len(self._by_id) + 64:
            live = self._by_id
            self._heap = [entry for entry in self._heap if live.get(entry[3].timer_id or "") is entry[3]]
            heapq.heapify(self._heap)

    def next_due(self) -> float | None:
        """When the next pending timer is due, if any (a cancelled one may still count)."""
        return self._heap[0][0] if self._heap else None

    @property
    def heap_size(self) -> int:
        """Entries in the heap, cancelled ones included (what memory holds)."""
        return len(self._heap)

    async def run(self) -> None:
        """Deliver timers as they fall due, until cancelled."""
        clock = self._clock
        while True:
            now = clock()
            while self._heap and self._heap[0][0] <= now:
                _, _, address, msg = heapq.heappop(self._heap)
                if msg.timer_id is not None:
                    self._by_id.pop(msg.timer_id, None)
                if not msg.cancelled:
                    try:
                        self._deliver(address, msg)
                    except Exception:  # one timer must not stop every other from firing
                        log.exception("timer %s to %s cannot be delivered; it stays", msg.timer_id, address)
            self._wake = asyncio.Event()
            due = self._heap[0][0] if self._heap else None
            sleep_until = getattr(clock, "sleep_until", None)
            if sleep_until is not None:
                await sleep_until(due if due is not None else float("inf"), self._wake)
            elif due is None:
                await self._wake.wait()
            else:
                with anyio.move_on_after(max(0.0, due - clock())):
                    await self._wake.wait()
