"""Activation and passivation: which actors are in memory, at most ``max_active``.

Actors are virtual: an address that gets a message is loaded from the journal
(latest snapshot, then later events) in a worker thread, least recently used
idle actors are passivated to make room, and the rest wait their turn.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import anyio.to_thread

from storage import ActorStatus, Backend, OperationalError

from ._cell import Cell
from ._mailboxes import Mailboxes
from ._rebuild import Loaded, load
from ._registry import Registry

log = logging.getLogger("stele.runtime")

LOAD_RETRY_S = 1.0
"""How long an actor whose journal could not be read waits before its load is tried again."""


class Activation:
    """The actors in memory (in least-recently-used order), and those waiting for room."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        mailboxes: Mailboxes,
        registry: Registry,
        *,
        max_active: int,
        spawn: Callable[..., None],
        closing: Callable[[], bool],
    ) -> None:
        self._loop = loop
        self._mailboxes = mailboxes
        self._registry = registry
        self.max_active = max_active
        self._spawn: Callable[[Callable[..., Coroutine[Any, Any, None]], list[Cell]], None] = spawn
        self._closing = closing
        self.backend: Backend | None = None
        """Set once the journal is owned."""
        self.active: dict[str, Cell] = {}
        """Actors in memory; insertion order is least-recently-used order."""
        self._waiting: list[Cell] = []  # to load once there is room under max_active
        self.loads_in_flight = 0
        self._scheduled = False
        self.actor_hwm = 0
        """The highest actor id given out (journal rows name actors by id)."""
        self.lease_of: Callable[[str], int] | None = None
        """With many nodes: the generation of this node's lease on an address's shard now (-1: none)."""
        self.new_actor_id: Callable[[], int] | None = None
        """With many nodes: ids come from blocks reserved in the shared database instead."""

    def touch(self, cell: Cell) -> None:
        """``cell`` runs now: it becomes the most recently used."""
        active = self.active
        active.pop(cell.address, None)
        active[cell.address] = cell

    def activate(self, cells: list[Cell]) -> None:
        """Load ``cells`` as far as ``max_active`` allows; the rest wait their turn."""
        lease_of = self.lease_of
        for cell in cells:
            cell.loading = True  # requested: the scheduler leaves it alone until loaded
            if lease_of is not None:
                # Taken before the journal is read: the state loaded is at least as new as this lease.
                cell.lease = lease_of(cell.address)
        room = self.max_active - len(self.active) - self.loads_in_flight
        if room < len(cells):
            room += self._evict(len(cells) - room)
        take = cells[: max(room, 0)]
        self._waiting.extend(cells[len(take) :])
        if take:
            self.loads_in_flight += len(take)
            self._spawn(self._load, take)

    def room_freed(self) -> None:
        """An actor went idle: load those waiting for room, soon."""
        if self._waiting and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._activate_waiting)

    def _activate_waiting(self) -> None:
        self._scheduled = False
        waiting, self._waiting = self._waiting, []
        if waiting and not self._closing():
            self.activate(waiting)

    def _evict(self, wanted: int) -> int:
        """Passivate up to ``wanted`` idle actors, least recently used first."""
        victims = []
        for address, cell in self.active.items():
            if cell.idle:
                victims.append(address)
                if len(victims) == wanted:
                    break
        for address in victims:
            self.unload(self.active[address])
        return len(victims)

    def unload(self, cell: Cell) -> None:
        """Drop ``cell``'s instance: the next message rebuilds it from the journal."""
        cell.instance = None
        self.active.pop(cell.address, None)
        self._mailboxes.forget(cell)

    async def _load(self, cells: list[Cell]) -> None:
        backend = self.backend
        assert backend is not None
        codec = self._registry.codec

        def load_all() -> list[Loaded | BaseException]:
            results: list[Loaded | BaseException] = []
            for cell in cells:
                try:
                    results.append(load(backend, cell.desc, codec, cell.address, cell.key))
                except Exception as exc:
                    results.append(exc)
            return results

        results = await anyio.to_thread.run_sync(load_all)
        self.loads_in_flight -= len(cells)
        for cell, result in zip(cells, results, strict=True):
            cell.loading = False
            if isinstance(result, BaseException):
                log.error("%s cannot be loaded: %s", cell.address, result)
                cell.failed = result
                if isinstance(result, OperationalError):
                    # The journal could not be read (a database restarting, say): try again later,
                    # or its durable messages would wait for new traffic to retry the load.
                    self._loop.call_later(LOAD_RETRY_S, self._retry, cell, result)
            else:
                self._activated(cell, result)
            self._mailboxes.make_ready(cell)

    def _retry(self, cell: Cell, failure: BaseException) -> None:
        if cell.failed is failure and not self._closing():
            cell.failed = None
            if cell.mailbox:
                self._mailboxes.make_ready(cell)

    def _activated(self, cell: Cell, loaded: Loaded) -> None:
        cell.instance = loaded.instance
        info = loaded.info
        cell.registered = info is not None
        if info is not None:
            cell.actor_id = info.id
        elif self.new_actor_id is not None:
            cell.actor_id = self.new_actor_id()
        else:
            self.actor_hwm += 1
            cell.actor_id = self.actor_hwm
        cell.next_seq = (info.last_seq if info else 0) + 1
        cell.since_snapshot = loaded.events
        if info is not None and info.status == ActorStatus.SUSPENDED:
            cell.suspended = True
            cell.reason = info.reason or "suspended"
        if loaded.open_step:
            message = loaded.open_step[0].step
            for msg in cell.mailbox:
                if msg.step == message:
                    # Resume the interrupted step before anything newer.
                    cell.mailbox.remove(msg)
                    cell.mailbox.appendleft(msg)
                    cell.open_step = loaded.open_step
                    break
        self.active[cell.address] = cell
