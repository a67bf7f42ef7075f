"""This runtime as one of many nodes on one PostgreSQL database: its leases, and messages it does not own.

Actors are spread over shards (``storage.shard_of``); a node owns the actors of
the shards it holds a lease on (storage/_pg_nodes.py says how leases, their
generations and the commit fence work in the database). This object:

- renews its leases every third of the lease time, takes a fair share of the
  shards nobody holds (``ceil(shards / live nodes)``) and gives back what is
  beyond it, so that nodes that start later get their share;
- believes it owns a shard only until its lease could have expired: the
  renewal's start plus 90 % of the lease, by this machine's monotonic clock
  (a process stopped with SIGSTOP finds its leases lapsed when it resumes,
  before it runs or commits anything: its commits would fail the fence anyway);
- loads a shard's pending messages when it takes the shard over (an interrupted
  step then resumes from the journal, its recorded effects not run again), and
  drops what it held of a shard it lost;
- sends a message for an actor it does not own through the inbox table and
  wakes the nodes (``NOTIFY``); picks up what others send it (woken, or by
  polling its shards' inbox every ``poll_s`` as a fallback); and routes an
  ask's reply back to the node its caller waits on, as a promise of that node.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio.to_thread
import msgspec

import storage

log = logging.getLogger("stele.runtime")

ID_BLOCK = 10_000
"""Message (and actor) ids a node reserves at a time from the database's shared counter."""

MAX_NOTE = 7000
"""The longest notification payload sent (PostgreSQL's limit is 8,000 bytes)."""


@dataclasses.dataclass(frozen=True)
class NodeOptions:
    """A runtime that shares its PostgreSQL database with other runtimes (nodes).

    ``lease_s``: how long a node's leases last without renewal; a node that
    dies or stops renewing loses its actors to the live nodes within about
    that long (plus a third of it, when they next look). ``poll_s``: how often
    a node looks for messages it was not woken for.
    """

    name: str | None = None
    """This node's id (default: host, pid and a random suffix: unique per run)."""
    lease_s: float = 6.0
    poll_s: float = 1.0
    http: str | None = None
    """Where this node serves HTTP, for ``python -m runtime nodes`` and ``/status``."""

    def __post_init__(self) -> None:
        if not (0.5 <= self.lease_s <= 3600):
            raise ValueError(f"lease_s must be between 0.5 and 3600 seconds, not {self.lease_s!r}")
        if not (0.05 <= self.poll_s <= 60):
            raise ValueError(f"poll_s must be between 0.05 and 60 seconds, not {self.poll_s!r}")


class NodeStatus(msgspec.Struct, frozen=True):
    """This node, as :meth:`Runtime.statistics` reports it."""

    id: str
    shards: int
    """Shards this node holds a lease on now."""
    live_nodes: int
    """Nodes that renewed within their lease, at the last renewal."""
    lease_s: float
    acquired: int
    """Shards taken (over) since the start."""
    lost: int
    """Shards lost (taken over by another node, or lapsed) since the start."""
    released: int
    """Shards given back to balance the load, or at a clean stop."""
    remote_sent: int
    """Messages sent to actors other nodes own."""
    remote_received: int
    """Messages picked up that other nodes sent (woken or found by polling)."""


@functools.lru_cache(maxsize=65_536)
def shard(address: str) -> int:
    """The shard of ``address`` (cached: a tell asks for it)."""
    return storage.shard_of(address)


class Cluster:
    """This node's view of the shared database: which shards it owns, and the traffic with other nodes."""

    def __init__(
        self,
        url: str,
        options: NodeOptions,
        loop: asyncio.AbstractEventLoop,
        spawn: Callable[..., None],
    ) -> None:
        self.options = options
        self.id = options.name or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.address = storage.node_address(self.id)
        """Where the replies to this node's asks arrive (a promise address)."""
        self.db = storage.PgNodes(url)
        self._loop = loop
        self._spawn = spawn
        self.held: dict[int, int] = {}
        """Shard -> the generation of this node's lease on it."""
        self._valid_until = 0.0
        self.live = 1
        self.seen: set[int] = set()
        """Ids of the messages this node holds (in a mailbox, or its step under way)."""
        self._reads: list[set[int]] = []  # messages consumed while a read of the inbox is under way
        self._wanted: dict[int, int] = {}  # message id -> shard, to fetch at the end of this tick
        self._notes: list[str] = []
        self._flushing = False
        self.acquired = self.lost = self.released = self.sent = self.received = 0
        # Set by the runtime once its parts are made.
        self.adopt: Callable[[list[storage.Pending], bool], None] = lambda rows, recovered: None
        self.evict: Callable[[int], None] = lambda shard: None
        self.wake: Callable[[tuple[str, str], bytes], None] = lambda promise, value: None
        self.waiting: Callable[[], Sequence[tuple[str, str]]] = tuple
        self.read_promise: Callable[[str, str], bytes | None] = lambda address, name: None
        self.resumed: Callable[[str], None] = lambda address: None
        self.suspended: Callable[[], Sequence[str]] = tuple
        self.is_suspended: Callable[[str], bool] = lambda address: False
        self.read_actor: Callable[[str], storage.ActorInfo | None] = lambda address: None

    # -- ownership --------------------------------------------------------------------------

    def owned(self, address: str) -> bool:
        """Whether this node owns ``address`` now (its lease held, and surely not expired).

        A node's own address (where its asks' replies arrive) is owned by that node only.
        """
        if address.startswith(storage.NODE_PREFIX):
            return address == self.address
        return shard(address) in self.held and time.monotonic() < self._valid_until

    def lease_of(self, address: str) -> int:
        """The generation of this node's lease on ``address``'s shard now (-1: none; a step fails its fence)."""
        return self.held.get(shard(address), -1)

    def status(self) -> NodeStatus:
        """This node now."""
        return NodeStatus(
            self.id, len(self.held), self.live, self.options.lease_s, self.acquired, self.lost, self.released,
            self.sent, self.received,
        )  # fmt: skip

    # -- the leases -------------------------------------------------------------------------

    async def start(self) -> None:
        """Join, take a first share of the shards (loading their messages), listen, and keep renewing."""
        options = self.options
        await anyio.to_thread.run_sync(
            self.db.join, self.id, socket.gethostname(), os.getpid(), options.http, options.lease_s
        )
        await self.renew()
        self.db.listen(self._notified_threadsafe)
        self._spawn(self._keep_leases)
        self._spawn(self._keep_polling)

    async def _keep_leases(self) -> None:
        while True:
            await asyncio.sleep(self.options.lease_s / 3)
            try:
                await self.renew()
            except storage.StorageError as exc:
                log.warning("node %s cannot renew its leases: %s", self.id, exc)

    async def renew(self) -> None:
        """Renew the leases held, drop those lost, and take or give back shards towards a fair share."""
        lease = self.options.lease_s
        started = time.monotonic()
        kept, live = await anyio.to_thread.run_sync(self.db.renew, self.id, dict(self.held), lease)
        for lost in [s for s in self.held if kept.get(s) != self.held[s]]:
            log.warning("node %s lost shard %d (its lease expired or another node took it over)", self.id, lost)
            self.lost += 1
            self._drop(lost)
        self.held = dict(kept)
        self._valid_until = started + 0.9 * lease
        self.live = max(live, 1)
        fair = math.ceil(storage.SHARDS / self.live)
        if len(self.held) < fair:
            started = time.monotonic()
            got = await anyio.to_thread.run_sync(self.db.acquire, self.id, fair - len(self.held), lease)
            if got:
                self.held.update(got)
                self._valid_until = min(self._valid_until, started + 0.9 * lease)
                self.acquired += len(got)
                log.info("node %s took shard(s) %s", self.id, sorted(got))
                await self._load(sorted(got))
        elif len(self.held) > fair:
            extra = {s: self.held[s] for s in sorted(self.held)[fair:]}
            for s in extra:
                self._drop(s)
            self.released += len(extra)
            await anyio.to_thread.run_sync(self.db.release, self.id, extra)
            log.info("node %s gave back shard(s) %s for %d live node(s)", self.id, sorted(extra), self.live)

    def _drop(self, s: int) -> None:
        self.held.pop(s, None)
        self.evict(s)

    async def leave(self) -> None:
        """A clean stop: give every lease back at once (the other nodes take them at their next look)."""
        held, self.held = dict(self.held), {}
        self.released += len(held)
        try:
            await anyio.to_thread.run_sync(self.db.leave, self.id, held)
        except storage.StorageError as exc:
            log.warning("node %s could not give its leases back (they expire): %s", self.id, exc)

    def close(self) -> None:
        """Stop listening and close the connections (a crash gives nothing back: the leases expire)."""
        self.db.close()

    # -- ids ----------------------------------------------------------------------------------

    def reserve(self) -> tuple[int, int]:
        """A block of fresh ids ``(first, last)``, reserved in the database (a short blocking call)."""
        first = self.db.reserve(ID_BLOCK)
        return first, first + ID_BLOCK - 1

    # -- messages in ------------------------------------------------------------------------

    def consumed(self, message: int) -> None:
        """A message this node held is gone (processed, dropped, moved)."""
        self.seen.discard(message)
        for read in self._reads:
            read.add(message)

    async def _read(
        self, fn: Callable[..., list[storage.Pending]], *args: Any
    ) -> tuple[list[storage.Pending], set[int]]:
        """``fn(*args)`` in a thread, and the ids consumed meanwhile (they must not come back)."""
        gone: set[int] = set()
        self._reads.append(gone)
        try:
            rows = await anyio.to_thread.run_sync(fn, *args)
        finally:
            # By identity: two reads' sets may be equal (both empty), and list.remove compares by value.
            self._reads = [read for read in self._reads if read is not gone]
        return rows, gone

    def _fresh(self, rows: list[storage.Pending], gone: set[int]) -> list[storage.Pending]:
        return [r for r in rows if r.id not in self.seen and r.id not in gone and self.owned(r.target)]

    async def _load(self, shards: list[int]) -> None:
        rows, gone = await self._read(self.db.pending_in, shards)
        fresh = self._fresh(rows, gone)
        if fresh:
            self.adopt(fresh, True)

    def _notified_threadsafe(self, payload: str | None) -> None:
        self._loop.call_soon_threadsafe(self._notified, payload)

    def _notified(self, payload: str | None) -> None:
        if payload is None:  # (re)connected: what was sent meanwhile is found by a poll now
            self._spawn(self._poll)
            return
        try:
            note = json.loads(payload)
        except ValueError:
            return
        if "i" in note:
            wanted = self._wanted
            first = not wanted
            for message, s in note["i"]:
                if s in self.held and message not in self.seen:
                    wanted[int(message)] = int(s)
            if first and wanted:
                self._loop.call_soon(self._fetch)
        elif "p" in note:
            address, name = note["p"]
            if address == self.address or self.owned(address):
                self._spawn(self._wake, address, name)
        elif "r" in note:
            address = note["r"]
            if isinstance(address, str) and self.owned(address):
                self._spawn(self._check_resumed, [address])

    def _fetch(self) -> None:
        wanted, self._wanted = self._wanted, {}
        if wanted:
            self._spawn(self._fetch_rows, list(wanted))

    async def _fetch_rows(self, ids: list[int]) -> None:
        rows, gone = await self._read(self.db.pending_ids, ids)
        fresh = self._fresh(rows, gone)
        if fresh:
            self.received += len(fresh)
            self.adopt(fresh, False)

    async def _wake(self, address: str, name: str) -> None:
        value = await anyio.to_thread.run_sync(self.read_promise, address, name)
        if value is not None:
            self.wake((address, name), value)

    async def _keep_polling(self) -> None:
        while True:
            await asyncio.sleep(self.options.poll_s)
            try:
                await self._poll()
            except storage.StorageError as exc:
                log.warning("node %s cannot poll its inbox: %s", self.id, exc)

    async def _poll(self) -> None:
        """The fallback for lost wake-ups: messages of this node's shards it does not hold, promises it waits on."""
        if self.held:
            rows, gone = await self._read(self.db.pending_in, sorted(self.held))
            fresh = self._fresh(rows, gone)
            if fresh:
                self.received += len(fresh)
                self.adopt(fresh, True)
        for address, name in self.waiting():
            if address == self.address or self.owned(address):
                await self._wake(address, name)
        await self._check_resumed(self.suspended())

    async def _check_resumed(self, addresses: Sequence[str]) -> None:
        """Resume the suspended actors held here that were resumed on another node."""
        for address in addresses:
            if not self.is_suspended(address) or not self.owned(address):
                continue
            info = await anyio.to_thread.run_sync(self.read_actor, address)
            if info is not None and info.status == storage.ActorStatus.ACTIVE and self.is_suspended(address):
                log.info("node %s: %s was resumed on another node", self.id, address)
                self.resumed(address)

    # -- messages out -----------------------------------------------------------------------

    def route_inbox(self, messages: Sequence[tuple[int, str]]) -> None:
        """Messages ``(id, target)`` committed to the inbox for actors this node does not own: wake the nodes."""
        self.sent += len(messages)
        pairs = [[message, shard(target)] for message, target in messages]
        step = max(1, MAX_NOTE // 24)
        for start in range(0, len(pairs), step):
            self._send(json.dumps({"i": pairs[start : start + step]}, separators=(",", ":")))

    def route_resume(self, address: str) -> None:
        """An actor this node does not own was resumed: wake its owner (which also polls for it)."""
        self._send(json.dumps({"r": address}, separators=(",", ":")))

    def route_promise(self, address: str, name: str) -> None:
        """A promise (an ask's reply) committed for an address this node does not own: wake the nodes."""
        self._send(json.dumps({"p": [address, name]}, separators=(",", ":")))

    def _send(self, note: str) -> None:
        self._notes.append(note)
        if not self._flushing:
            self._flushing = True
            self._spawn(self._flush)

    async def _flush(self) -> None:
        try:
            while self._notes:
                notes, self._notes = self._notes, []
                try:
                    await anyio.to_thread.run_sync(self.db.notify, notes)
                except storage.StorageError as exc:  # the owner polls: it finds them within poll_s
                    log.warning("node %s could not wake the other nodes: %s", self.id, exc)
        finally:
            self._flushing = False
