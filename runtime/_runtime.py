"""``Runtime``: hosts actor classes over one journal.

One event-loop thread runs every handler; one writer thread commits. The
runtime is the public face: it owns the lifecycle (own the journal, recover
what was pending, close within a grace) and the public calls, and delegates
each to the object that owns the concept:

- :class:`~runtime._mailboxes.Mailboxes`: cells, mailboxes, backpressure;
- :class:`~runtime._scheduler.Scheduler`: rounds of steps and their outcomes;
- :class:`~runtime._activation.Activation`: which actors are in memory;
- :class:`~runtime._ingress.Ingress`: the tells of a loop tick;
- :class:`~runtime._idempotency.Idempotency`, :class:`~runtime._promises.Promises`,
  :class:`~runtime._dead_letters.DeadLetters`, :class:`~runtime._timers.Timers`,
  :class:`~runtime._health.JournalHealth`;
- :class:`~runtime._writes.Writes`: the door to the journal's writer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from types import TracebackType
from typing import Any, Literal, Unpack

import anyio
import anyio.to_thread
import msgspec

import storage
from actors import (
    Actor,
    ActorSuspendedError,
    AskTimeoutError,
    JournalError,
    ReplicationTimeout,
    RuntimeClosedError,
    SteleError,
)
from storage import ActorStatus, Backend, PutMeta, RecordKey, SetStatus, Store, TakePromise, Unit, is_postgres

from . import _collector
from ._activation import Activation
from ._cell import Msg
from ._cluster import Cluster, NodeOptions
from ._compact import DEFAULT_BATCH, Compactor, CompactReport
from ._dead_letters import DeadLetters
from ._drill import DrillReport, DrillStatus
from ._followers import POLL_S, StreamItem, stream_item
from ._fork import Forking, ForkReport
from ._health import JournalHealth
from ._idempotency import Idempotency
from ._ingress import Ingress
from ._mailboxes import Mailboxes
from ._options import DURABILITIES, Durability, FlatOptions, Limits, ReplicationOptions, grouped
from ._outcomes import answered
from ._promises import Promises
from ._rebuild import load
from ._records import EffectRecord
from ._registry import Registry
from ._scheduler import Scheduler
from ._statistics import RuntimeStatistics, WriterStatistics
from ._timers import Timers
from ._values import scalar, text
from ._writes import Writes

log = logging.getLogger("stele.runtime")

RECLAIM_EVERY_S = 60.0
"""How often the runtime reclaims stored payloads nothing refers to any more."""


class Runtime:
    """Hosts actor classes over the journal at ``path``; an async context manager.

    ``path`` is a SQLite file, or a PostgreSQL database when it is a
    ``postgresql://`` URL (docs/postgresql.md): the same actors, the same API.

    ``durability`` is ``"fsync"`` (``synchronous=FULL``, the default),
    ``"normal"`` (``synchronous=NORMAL``: survives a process crash, may lose the
    last commits on power loss) or ``"replicated"`` (fsync, and every tell and
    ask is acknowledged only once its commit is in the replica). On PostgreSQL
    they set ``synchronous_commit``: ``on``, ``off``, and ``on`` on a server
    with synchronous standbys (refused on one without).

    ``replicate`` is an ``s3://BUCKET/PATH?endpoint=…`` URL or a local
    directory: Litestream is started, supervised and stopped with the runtime,
    and ``rt.replication`` reports what is not yet replicated; ``replication``
    (:class:`ReplicationOptions`) says how. ``limits`` (:class:`Limits`) bounds
    what the runtime holds and does at once. Every field of both groups is
    also accepted as a keyword of its own (``max_active=…``,
    ``lag_warning_s=…``).

    ``idempotency_retention_s``: how long an idempotency key keeps its first
    outcome. ``payload_threshold``: values (messages, effect results, events,
    replies, snapshots) longer than this many bytes are stored once, as
    compressed, content-addressed chunks shared by every entry and snapshot
    that holds the same content (None: never; "auto": 1 KiB on a SQLite
    file, never on PostgreSQL, which refuses a threshold; see
    ``docs/payloads.md``).
    ``clock`` and ``rng`` are injectable (tests: a virtual clock runs an hour
    of timers in milliseconds). ``vfs`` names an APSW VFS to open the
    journal through (fault injection).

    ``node`` (:class:`NodeOptions`, PostgreSQL only): share the database with
    other runtime processes, each owning a share of the actors through leases;
    a tell or ask to an actor another node owns goes to it through the
    database (docs/nodes.md).
    """

    def __init__(
        self,
        path: str,
        actors: Iterable[type[Actor]],
        *,
        durability: Durability | str = "fsync",
        replicate: str | None = None,
        limits: Limits | None = None,
        replication: ReplicationOptions | None = None,
        idempotency_retention_s: float = 24 * 3600.0,
        payload_threshold: int | Literal["auto"] | None = "auto",
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        vfs: str | None = None,
        node: NodeOptions | None = None,
        **options: Unpack[FlatOptions],
    ) -> None:
        if durability not in DURABILITIES:
            raise ValueError(f"durability must be one of {DURABILITIES}, not {durability!r}")
        self.postgres = is_postgres(path)
        """Whether the journal is a PostgreSQL database (its durability and replication are the server's)."""
        if self.postgres:
            given = (("replicate", replicate), ("replication", replication), ("vfs", vfs))
            refused = [name for name, value in given if value is not None]
            defaults = ReplicationOptions()
            refused += sorted(
                f.name
                for f in dataclasses.fields(ReplicationOptions)
                if f.name in options and options[f.name] != getattr(defaults, f.name)  # type: ignore[literal-required]
            )
            if refused:
                raise ValueError(
                    f"{', '.join(refused)}: Litestream replication and a VFS are for SQLite journals; on "
                    "PostgreSQL the database's durability is the server's (synchronous_commit, standbys): "
                    'use durability="replicated" for synchronous replication'
                )
            if payload_threshold not in ("auto", None):
                raise ValueError(
                    f"payload_threshold={payload_threshold!r}: payloads stored once are for SQLite journals; a "
                    "PostgreSQL journal keeps every value in its row (the server compresses large ones, TOAST), "
                    "see docs/payloads.md; leave payload_threshold unset"
                )
        elif durability == "replicated" and replicate is None:
            raise ValueError('durability="replicated" needs replicate=URL_OR_DIRECTORY')
        if node is not None and not self.postgres:
            raise ValueError("node=: many nodes share a PostgreSQL database; a SQLite journal has one owner")
        self.node_options = node
        self._cluster: Cluster | None = None
        self.path = path
        self.registry = Registry(actors)
        self.durability = durability
        self.replicate = replicate
        self.limits, self.replication_options = grouped(limits, replication, options)
        self.idempotency_retention_s = idempotency_retention_s
        self.payload_threshold = payload_threshold
        self.clock = clock
        self.rng = rng or random.Random()
        self.vfs = vfs
        self._replication: storage.Replication | None = None
        self._store: Backend | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._parts: _Parts | None = None
        self._open = False
        self._drills: DrillStatus | None = None

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise SteleError("Runtime runs on anyio's asyncio backend") from None
        parts = self._parts = _Parts(self, loop)
        cluster = None
        if self.node_options is not None:
            cluster = self._cluster = Cluster(self.path, self.node_options, loop, self.spawn)
        try:
            options = self.replication_options
            if self.replicate is not None:
                self._replication = storage.Replication(
                    os.path.realpath(self.path),
                    self.replicate,
                    lag_warning_s=options.lag_warning_s,
                    sync_interval=options.sync_interval,
                    binary=options.litestream,
                    external_socket=options.litestream_socket,
                    nudge_after_s=options.replication_nudge_s,
                    max_wal_bytes=options.max_wal_bytes,
                    stall_after_s=options.stall_after_s,
                )
            restore = self._restore_missing if options.restore_if_missing and self._replication is not None else None
            open_store = functools.partial(
                storage.open_backend,
                self.path,
                durability=self.durability,
                notify=parts.writes.notify,
                vfs=self.vfs,
                replication=self._replication,
                restore=restore,  # runs once the journal is owned, only if it is missing
                node=cluster.id if cluster is not None else None,
                payload_threshold=self.payload_threshold,
            )

            def opened() -> Backend:
                # Kept by the thread itself: a start cancelled while the file opens
                # still finds the store below, and closes it.
                self._store = open_store()
                return self._store

            store = await anyio.to_thread.run_sync(opened)
            parts.attach(store)
            if cluster is not None:
                await parts.join(cluster, store)
                self._open = True
                self.spawn(parts.idempotency.purge_hourly)
                self.spawn(parts.timers.run)
                await cluster.start()  # its shards' pending messages, as it takes them
            else:
                pending = await anyio.to_thread.run_sync(store.pending)
                self._open = True
                self.spawn(parts.idempotency.purge_hourly)
                if not self.postgres:  # a PostgreSQL journal keeps values in their rows: nothing to reclaim
                    self.spawn(self._reclaim_periodically)
                self.spawn(parts.timers.run)
                parts.scheduler.recover(pending)
        except BaseException:
            # Whatever failed, and however (cancellation included), nothing stays
            # behind: tasks, the writer, Litestream and its threads, the owner lock.
            self._open = False
            parts.scheduler.closing = True
            left, self._store = self._store, None
            with anyio.CancelScope(shield=True):
                await self._cancel_tasks()
                if left is not None:
                    await anyio.to_thread.run_sync(left.close)
                if cluster is not None:
                    await cluster.leave()
                    cluster.close()
            raise
        _collector.hold(self, self.limits.young_gc_threshold)
        return self

    async def __aexit__(
        self, tp: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop accepting, let in-flight steps finish within the grace, answer every ask, close the file."""
        if not self._open:
            return
        self._open = False
        _collector.release(self, self.limits.young_gc_threshold)
        parts, store = self._parts, self._store
        assert parts is not None and store is not None
        scheduler = parts.scheduler
        scheduler.closing = True
        scheduler.followers.close()  # readers of streams read what is there and end
        scheduler.fail_waiters(self.path, started=False)  # messages not started yet
        # Shielded: a close under a cancelled scope (`async with Runtime(...)`
        # inside `move_on_after`) must still stop Litestream and let go of the file.
        with anyio.CancelScope(shield=True):
            if scheduler.inflight > scheduler.parked:  # steps waiting for a promise resume at the next start
                with anyio.move_on_after(self.limits.grace):
                    await scheduler.idle.wait()
            await self._cancel_tasks()
            scheduler.fail_waiters(self.path, started=True)  # and steps that did not finish within the grace
            tells = parts.ingress.take()  # accepted tells not yet handed over go in before the writer stops
            if tells is not None:
                parts.writes.submit_all([tells])
            await anyio.to_thread.run_sync(store.close)
            cluster = self._cluster
            if cluster is not None:
                await cluster.leave()  # the other nodes take the actors at their next look
                cluster.close()

    async def abandon(self) -> None:
        """Let go of everything as a crash would: nothing queued is committed (for tests)."""
        if not self._open:
            return
        self._open = False
        _collector.release(self, self.limits.young_gc_threshold)  # a crash gives the threshold back too
        assert self._parts is not None and self._store is not None
        self._parts.scheduler.closing = True
        self._parts.scheduler.followers.close()
        self._store.abandon()
        await self._cancel_tasks()
        if self._cluster is not None:
            self._cluster.close()  # as a crash: the leases are not given back, they expire

    async def _cancel_tasks(self) -> None:
        # Plain asyncio tasks rather than an anyio task group: a runtime may be
        # opened in one task and closed in another (a portal, a test fixture).
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def spawn(self, fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        """Run ``fn(*args)`` as a task the runtime cancels when it closes.

        The coroutine is created inside the task, so a task cancelled before
        it starts leaves no never-awaited coroutine behind.
        """
        task = asyncio.get_running_loop().create_task(_guard(fn, *args))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- sending ----------------------------------------------------------------

    async def tell(
        self,
        address: str,
        msg: msgspec.Struct,
        *,
        durability: str | None = None,
        timeout: float | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        """Send ``msg`` to ``address``; return once it is durably in the inbox (G1).

        With ``durability="replicated"`` (per call, or the runtime's), return only
        once that commit is in the replica; :class:`ReplicationTimeout` after
        ``timeout`` seconds (the message stays durable locally). A repeated
        ``idempotency_key`` (within the retention) enqueues nothing new.

        When the journal fails: :class:`BackpressureError` or another
        :class:`JournalOperationalError` means nothing was accepted;
        :class:`CommitUnknownError` means it may or may not have been (resend
        only with an ``idempotency_key``).
        """
        parts = self._parts
        if parts is None or not self._open:
            raise RuntimeClosedError(f"runtime on {self.path} is not open")
        if durability is not None:
            self._check_durability(durability)
        if idempotency_key is not None:

            async def first() -> None:
                await self._accept(parts, address, msg, idempotency_key)
                if (durability or self.durability) == "replicated":
                    await self._replicated(timeout)

            await parts.idempotency.call(idempotency_key, address, msg, first, ask=False, timeout=None)
            return
        await self._accept(parts, address, msg, None)
        if (durability or self.durability) == "replicated":
            await self._replicated(timeout)

    def _accept(self, parts: _Parts, address: str, msg: msgspec.Struct, key: str | None) -> asyncio.Future[None]:
        """Put a tell in its mailbox now; the returned future (its tick's, shared) says when it is durable.

        The hot path of every tell: a plain function, so a tell is one
        coroutine, not two (see docs/performance.md).
        """
        mailboxes = parts.mailboxes
        cell = mailboxes.cells.get(address)
        prepared = parts.scheduler.prepare(address, msg, None, cell.desc if cell is not None else None)
        cluster = self._cluster
        if cluster is not None and not cluster.owned(address):
            at = self.clock()  # another node owns the actor: the inbox row takes it there
            record = RecordKey(key, address, prepared.step, None, at, "tell", prepared.handler.name) if key else None
            return parts.ingress.add_remote(address, prepared, prepared.inbox_row(address, at), record)
        mailboxes.admit(address)
        if cell is None:
            cell = mailboxes.cell(address)
        cell.failed = None  # new traffic retries a failed load (once per message)
        at = self.clock()
        record = RecordKey(key, address, prepared.step, None, at, "tell", prepared.handler.name) if key else None
        return parts.ingress.add(cell, prepared, prepared.inbox_row(address, at), record)

    async def ask(
        self,
        address: str,
        msg: msgspec.Struct,
        *,
        timeout: float | None = None,
        durability: str | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """Send ``msg`` to ``address`` and return the handler's reply.

        Raises :class:`HandlerError` if the handler raised, and
        :class:`AskTimeoutError` if no reply came within ``timeout`` seconds (the
        message may still be processed). The ask is acknowledged by its reply
        only: it skips the inbox unless its handler runs an effect. With
        ``durability="replicated"`` the reply is returned once its commit is in
        the replica (:class:`ReplicationTimeout` otherwise). A repeated
        ``idempotency_key`` (within the retention) returns the first reply (or
        raises the first error) without running the handler again.

        When the journal fails, as for :meth:`tell`; besides,
        :class:`ReplyUnavailableError` means the ask is accepted and will run
        once its actor can (do not resend it), but no reply can be given now.
        """
        parts = self._running()
        self._check_durability(durability)
        if idempotency_key is not None:

            async def first() -> Any:
                return await self._ask(address, msg, timeout, durability, idempotency_key)

            return await parts.idempotency.call(idempotency_key, address, msg, first, ask=True, timeout=timeout)
        return await self._ask(address, msg, timeout, durability, None)

    async def _ask(
        self, address: str, msg: msgspec.Struct, timeout: float | None, durability: str | None, key: str | None
    ) -> Any:
        parts = self._running()
        prepared = parts.scheduler.prepare(address, msg)
        prepared.idempotency_key = key
        cluster = self._cluster
        if cluster is not None and not cluster.owned(address):
            reply = await self._ask_elsewhere(parts, cluster, address, msg, prepared, timeout)
            if (durability or self.durability) == "replicated":
                await self._replicated(timeout)
            return reply
        known = parts.mailboxes.get(address)
        if known is not None and known.suspended:
            raise ActorSuspendedError(address, known.reason)
        parts.mailboxes.admit(address)
        cell = parts.mailboxes.cell(address)
        cell.failed = None  # new traffic retries a failed load (once per message)
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        prepared.waiter = waiter
        parts.mailboxes.deliver(cell, prepared)
        # Under a key, a repeated call may wait on the same future: this caller
        # giving up (a timeout, a cancellation) must not cancel it for them.
        wait: Awaitable[Any] = asyncio.shield(waiter) if key is not None else waiter
        if timeout is None:
            reply = await wait
        else:
            try:
                reply = await asyncio.wait_for(wait, timeout)
            except TimeoutError:
                raise AskTimeoutError(f"no reply from {address} within {timeout} s") from None
        if (durability or self.durability) == "replicated":
            await self._replicated(timeout)
        return reply

    async def _ask_elsewhere(
        self, parts: _Parts, cluster: Cluster, address: str, msg: msgspec.Struct, prepared: Msg, timeout: float | None
    ) -> Any:
        """An ask to an actor another node owns: into the inbox, its owner woken, the reply back here.

        The reply comes as a promise of this node's own address, which the
        owner's step writes with its reply (as it does for an actor's ask).
        """
        name = f"ask:{prepared.step}"
        prepared.reply_to = (cluster.address, name)
        at = self.clock()
        row = prepared.inbox_row(address, at, key=prepared.idempotency_key)
        await parts.writes.write(Unit(inbox=[row], top=prepared.step))  # a failure: not accepted
        cluster.route_inbox([(prepared.step, address)])
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:  # accepted now: the reply waits in the database however long reading it fails
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                value = await parts.promises.take(cluster.address, name, left)
                break
            except JournalError as exc:
                log.warning("the reply to ask %s of %s cannot be read yet: %s", name, address, exc)
                if deadline is not None and time.monotonic() >= deadline:
                    value = None
                    break
                await anyio.sleep(cluster.options.poll_s)
        if value is None:
            raise AskTimeoutError(f"no reply from {address} within {timeout} s (the message may still be processed)")
        self.spawn(_forget_reply, parts, cluster.address, name)
        reply_type = self.registry.handler_for(self.registry.resolve(address)[0], msg).reply_type
        return answered(EffectRecord(0, True, msgspec.Raw(value)), address, reply_type)

    def _check_durability(self, durability: str | None) -> None:
        """Refuse a durability this call cannot have, before anything is accepted."""
        if durability is not None and durability not in DURABILITIES:
            raise ValueError(f"durability must be one of {DURABILITIES}, not {durability!r}")
        if durability == "replicated" and self.postgres and self.durability != "replicated":
            raise ValueError(
                'durability="replicated" on PostgreSQL is the server\'s synchronous replication, for every commit: '
                'open the runtime with durability="replicated"'
            )
        if durability == "replicated" and self._replication is None and not self.postgres:
            raise ValueError(f'durability="replicated" needs a runtime opened with replicate=URL (on {self.path})')

    # -- operating ------------------------------------------------------------------

    async def resolve(self, address: str, name: str, value: Any) -> None:
        """Complete the promise ``name`` of ``address`` with ``value``, exactly once.

        Durable when this returns; a value that arrives before the handler
        waits is kept for it. A promise already resolved (and not yet taken)
        is refused with :class:`PromiseError`.
        """
        await self._running().promises.resolve(address, name, value)
        cluster = self._cluster
        if cluster is not None and not cluster.owned(address):
            cluster.route_promise(address, name)  # its owner wakes the step waiting for it

    async def resume(self, address: str) -> None:
        """Resume an actor suspended after non-determinism, once its code is fixed.

        Its kept messages are delivered again; the interrupted step re-runs
        against its journal (and is suspended again if it still diverges).
        With many nodes, an actor another node owns is marked active in the
        journal and its owner is woken: it resumes the actor soon after this
        returns.
        """
        parts = self._running()
        self.registry.resolve(address)
        info = await anyio.to_thread.run_sync(self.store.actor, address)
        cell = parts.mailboxes.get(address)
        if (info is None or info.status != ActorStatus.SUSPENDED) and not (cell is not None and cell.suspended):
            raise SteleError(f"{address} is not suspended")
        cluster = self._cluster
        if cluster is not None and not cluster.owned(address):
            # An operator's act, valid from any node: the journal says so, and the owner is woken.
            await parts.writes.write(Unit(ops=[SetStatus(address, ActorStatus.ACTIVE)]))
            cluster.route_resume(address)
            return
        resume = SetStatus(address, ActorStatus.ACTIVE)
        await parts.writes.write(Unit(ops=[resume], fence=parts.scheduler.lease_now(address)))
        parts.scheduler.resumed(address)

    async def annotate(self, key: str, value: str | int | float | None) -> None:
        """Durably record operator metadata in the journal (which module serves it, where)."""
        meta = PutMeta(text(key, "annotation key"), scalar(value, f"annotation {key!r}"))
        await self._running().writes.write(Unit(ops=[meta]))

    async def dead_letters(self) -> list[storage.DeadLetter]:
        """Messages taken out of their actors' way after failing ``max_attempts`` times."""
        return await self._running().dead_letters.list()

    async def retry_dead_letter(self, letter_id: int) -> None:
        """Put a dead letter back in its actor's inbox, attempts reset."""
        await self._running().dead_letters.retry(letter_id)

    async def drop_dead_letter(self, letter_id: int) -> None:
        """Forget a dead letter for good."""
        await self._running().dead_letters.drop(letter_id)

    async def purge_idempotency_keys(self, *, batch: int = 1000) -> int:
        """Forget the idempotency keys older than the retention now, in bounded batches; how many.

        The runtime also does this at start and every hour.
        """
        return await self._running().idempotency.purge(batch=batch)

    # -- history -------------------------------------------------------------------------

    async def fork(
        self,
        address: str,
        *,
        to: str,
        at: int | None = None,
        replay_after: bool = False,
        history: storage.Reads | None = None,
        replica: str = "",
        timestamp: str = "",
    ) -> ForkReport:
        """Make a new actor ``to`` whose state is ``address``'s at journal position ``at`` (None: its latest).

        The fork's history begins with an entry naming where it came from; the
        source is only read. ``replay_after``: deliver the source's messages
        after ``at`` to the fork again, running the current code; the source's
        recorded effect results are reused (and marked so in the fork's
        journal) while the fork calls the same effects with the same arguments
        in the same order, and effects run for real from the first difference
        on. Returns once every such message has been handled.

        ``history``: read the source there instead of this journal (a restored
        replica; ``replica`` and ``timestamp`` are recorded as where it came
        from). :class:`ForkError` if ``to`` exists or is of another type;
        :class:`OutsideRetentionError` if ``at`` lies before what the source keeps.
        """
        forking = self._running().forking
        assert forking is not None  # made when the journal was opened
        return await forking.fork(
            address,
            at=at,
            to=to,
            replay_after=replay_after,
            history=history if history is not None else self.store,
            replica=replica,
            timestamp=timestamp,
        )

    async def compact(self, *, batch: int = DEFAULT_BATCH, reclaim: bool = True) -> CompactReport:
        """Remove the history each actor type's ``retention`` no longer keeps, and give the space back.

        Works in commits of at most ``batch`` sequence numbers, one after the
        other, so the actors' own commits go on in between. Every position from
        an actor's oldest kept snapshot on stays exact for ``state --at`` and a
        fork; an older one raises :class:`OutsideRetentionError`. ``reclaim``:
        return the freed pages to the file system (a journal created before
        schema version 8 keeps them for reuse instead; see docs/history.md).
        """
        compactor = self._running().compactor
        assert compactor is not None  # made when the journal was opened
        return await compactor.compact(batch=batch, reclaim=reclaim)

    async def reclaim_payloads(self) -> None:
        """Delete the stored payloads nothing refers to any more, in short commits of the writer.

        A chunk loses its last reference when the inbox message, key's reply,
        promise's value or dead letter that held it goes, or when compaction
        removes the history that held it (:meth:`compact` reclaims too). The
        runtime also does this at start and every :data:`RECLAIM_EVERY_S`
        seconds. On PostgreSQL, which keeps every value in its row, there is
        nothing to reclaim.
        """
        compactor = self._running().compactor
        assert compactor is not None  # made when the journal was opened
        await compactor.reclaim_payloads()

    async def _reclaim_periodically(self) -> None:
        while True:
            try:
                await self.reclaim_payloads()
            except SteleError as exc:  # the journal's trouble: the next round tries again
                log.warning("could not reclaim stored payloads: %s", exc)
            await anyio.sleep(RECLAIM_EVERY_S)

    # -- looking -------------------------------------------------------------------------

    async def stream(
        self, address: str, offset: int = 0, *, follow: bool = True, page: int = 500
    ) -> AsyncIterator[StreamItem]:
        """The stream of ``address`` (its streamed effects' starts, chunks and ends) from ``offset`` on.

        ``offset`` is an entry's sequence number in the actor's journal: a
        reader that got ``item`` resumes with ``offset=item.offset + 1`` and
        gets every later item exactly once, in order, whether it resumes at
        once or after a restart. With ``follow`` it then waits for more, until
        the runtime closes; without, it ends with what is there now. Items are
        read ``page`` at a time: a long stream is never held whole.
        """
        scheduler = self._running().scheduler
        self.registry.resolve(address)
        if offset < 0 or page < 1:
            raise ValueError(f"offset must be 0 or more and page 1 or more, not {offset} and {page}")
        store = self.store
        followers = scheduler.followers
        watch = followers.watch(address)
        try:
            while True:
                grew = watch.grew  # taken before reading: a commit meanwhile sets it
                try:
                    entries = await anyio.to_thread.run_sync(store.stream_entries, address, offset, page)
                except storage.StorageError:
                    if followers.closed:  # the journal closed under a reader: the runtime has stopped
                        return
                    raise
                for entry in entries:
                    yield stream_item(entry)
                    offset = entry.seq + 1
                if len(entries) == page:
                    continue
                if not follow or followers.closed:
                    return
                with anyio.move_on_after(POLL_S):
                    await grew.wait()
        finally:
            followers.unwatch(address, watch)

    def statistics(self) -> RuntimeStatistics:
        """How the runtime is doing now, as one frozen record (see :class:`RuntimeStatistics`)."""
        parts = self._parts
        stats = self._store.stats if self._store is not None else storage.WriterStats()
        writer = WriterStatistics(stats.batches, stats.units, stats.commit_seconds)
        replication = self.replication
        if parts is None:
            return RuntimeStatistics(
                False, 0, 0, 0, 0, 0, 0, 0, (), (), 0, None, (), (), None, writer, replication, self._drills
            )
        cells = list(parts.mailboxes)
        depths = [len(cell.mailbox) for cell in cells]
        return RuntimeStatistics(
            open=self._open and not parts.scheduler.closing,
            active_actors=len(parts.activation.active),
            addresses=len(cells),
            loading=parts.activation.loads_in_flight,
            pending=parts.mailboxes.pending,
            mailbox_depth=sum(depths),
            deepest_mailbox=max(depths, default=0),
            steps_in_flight=parts.scheduler.inflight,
            suspended=tuple(sorted(cell.address for cell in cells if cell.suspended)),
            failed=tuple(sorted(cell.address for cell in cells if cell.failed is not None)),
            timers=len(parts.timers),
            next_timer_due=parts.timers.next_due(),
            waiting_promises=parts.promises.waiting_on_promises(),
            waiting_asks=parts.promises.waiting_on_actors(),
            journal_failing=parts.health.failing,
            writer=writer,
            replication=replication,
            drill=self._drills,
            node=self._cluster.status() if self._cluster is not None else None,
            compaction=parts.compactor.status if parts.compactor is not None else None,
        )

    def node_owns(self, address: str) -> bool:
        """Whether this runtime owns ``address`` now: always, unless it is one of many nodes; then,
        while it holds the lease on the actor's shard."""
        return self._cluster is None or self._cluster.owned(address)

    @property
    def journal_failing(self) -> str | None:
        """Why commits are failing right now (a full disk, an I/O error), or None while they succeed.

        While it is set, new messages are refused with ``BackpressureError``
        except one probe every half second; it clears at the next commit that
        succeeds.
        """
        return self._parts.health.failing if self._parts is not None else None

    @property
    def replication(self) -> storage.ReplicationStatus | None:
        """What is not yet in the replica (None without replication); never blocks."""
        return self._replication.status() if self._replication is not None else None

    @property
    def drills(self) -> DrillStatus | None:
        """The last restore drill recorded, and how many ran and failed (None before the first)."""
        return self._drills

    def record_drill(self, report: DrillReport) -> None:
        """Keep ``report`` as the newest restore drill of this journal (``serve --drill-every`` calls this).

        The runtime does not run drills itself: a drill is CPU work that belongs
        in another process, which reports back here.
        """
        drills = self._drills
        self._drills = DrillStatus.first(report) if drills is None else drills.after(report)

    @property
    def replicator(self) -> storage.Replication | None:
        """The Litestream supervisor and replication monitor (None without replication)."""
        return self._replication

    @property
    def stats(self) -> storage.WriterStats:
        """The journal writer's counters (batches, units, commit time); see also :meth:`statistics`."""
        return self.store.stats

    @property
    def store(self) -> Backend:
        """The owned journal (a :class:`~storage.Store`, or a :class:`~storage.PgStore`)."""
        assert self._store is not None, "the runtime is not open"
        return self._store

    @property
    def timers(self) -> Timers:
        """The pending durable timers."""
        return self._running(check=False).timers

    @property
    def max_attempts(self) -> int:
        """See :attr:`Limits.max_attempts`."""
        return self.limits.max_attempts

    @property
    def litestream_socket(self) -> str | None:
        """See :attr:`ReplicationOptions.litestream_socket`."""
        return self.replication_options.litestream_socket

    def _running(self, *, check: bool = True) -> _Parts:
        if self._parts is None or (check and not self._open):
            raise RuntimeClosedError(f"runtime on {self.path} is not open")
        return self._parts

    # -- replication -------------------------------------------------------------------

    async def _replicated(self, timeout: float | None) -> None:
        """Wait until every commit made so far is in the replica."""
        if self.postgres:
            return  # the commit itself waited for the server's synchronous standbys
        replication = self._replication
        store = self.store
        commits = store.commits if isinstance(store, Store) else None
        if replication is None or commits is None:
            raise ValueError('durability="replicated" needs a runtime opened with replicate=URL_OR_DIRECTORY')
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not done.done():
                done.set_result(None)

        def confirmed() -> None:  # called from a monitor thread
            loop.call_soon_threadsafe(settle)

        replication.wait_for(commits.count, confirmed)
        limit = timeout if timeout is not None else self.replication_options.replication_timeout
        try:
            await asyncio.wait_for(done, limit)
        except BaseException as exc:  # a timeout, or the caller cancelled: stop listening either way
            replication.forget(confirmed)
            if not isinstance(exc, TimeoutError):
                raise
            status = replication.status()
            raise ReplicationTimeout(
                f"the commit is durable locally but was not confirmed in {status.url} within {limit} s "
                f"({status.commits_at_risk} commit(s) at risk; {status.last_error or 'no error reported'})"
            ) from None

    def _restore_missing(self, temp_path: str) -> bool:
        """Restore the missing journal into ``temp_path`` and rebuild every actor to verify it.

        Called by ``Store.open`` once the journal is owned; False if the replica
        holds nothing (a new journal is started).
        """
        replication = self._replication
        assert replication is not None and self.replicate is not None
        if replication.reader.newest() is None:
            log.info("no journal at %s and nothing in %s: starting a new journal", self.path, self.replicate)
            return False
        report = storage.restore(self.replicate, temp_path, binary=self.replication_options.litestream)
        with storage.Journal.open(temp_path) as journal:
            for info in journal.actors():
                desc = self.registry.actors.get(info.type)
                if desc is not None:
                    load(journal, desc, self.registry.codec, info.address, info.address.partition("/")[2])
        log.info(
            "restored %s from %s: %d actors, last position %d",
            self.path,
            self.replicate,
            report.actors,
            report.last_position,
        )
        return True


class _Parts:
    """The objects a running runtime is made of, wired to each other once, on its loop."""

    def __init__(self, rt: Runtime, loop: asyncio.AbstractEventLoop) -> None:
        limits = rt.limits
        self.scheduler = scheduler = Scheduler(loop, rt.registry, clock=rt.clock, rng=rt.rng, spawn=rt.spawn)
        scheduler.effect_limiter = anyio.CapacityLimiter(limits.effect_threads)
        self.writes = writes = Writes(loop)
        closing: Callable[[], bool] = lambda: scheduler.closing  # noqa: E731
        self.mailboxes = mailboxes = Mailboxes(
            rt.registry,
            max_mailbox=limits.max_mailbox,
            max_pending=limits.max_pending,
            schedule=scheduler.schedule,
        )
        self.health = JournalHealth(loop, writes, mailboxes, clock=rt.clock, spawn=rt.spawn, closing=closing)
        mailboxes.journal_admits = self.health.admit
        writes.after_batch = self.health.watch
        self.activation = Activation(
            loop, mailboxes, rt.registry, max_active=limits.max_active, spawn=rt.spawn, closing=closing
        )
        self.ingress = Ingress(loop, mailboxes)
        self.promises = promises = Promises(loop, rt.registry, writes, rt.clock)
        self.dead_letters = DeadLetters(
            loop,
            writes,
            mailboxes,
            promises,
            rt.registry,
            clock=rt.clock,
            max_attempts=limits.max_attempts,
            fence=scheduler.fence,
            deliver=scheduler.deliver,
        )
        self.idempotency = Idempotency(
            loop,
            writes,
            mailboxes,
            rt.registry,
            clock=rt.clock,
            retention_s=rt.idempotency_retention_s,
            validate=lambda address, msg: scheduler.validate(address, msg)[0].name,
        )
        self.timers = Timers(rt.clock, scheduler.deliver)
        scheduler.mailboxes = mailboxes
        scheduler.activation = self.activation
        scheduler.ingress = self.ingress
        scheduler.writes = writes
        scheduler.health = self.health
        scheduler.dead_letters = self.dead_letters
        scheduler.promises = promises
        scheduler.timers = self.timers
        self.compactor: Compactor | None = None
        self.forking: Forking | None = None
        """Both read the journal: made once it is owned (:meth:`attach`)."""

    async def join(self, cluster: Cluster, store: Backend) -> None:
        """Wire this runtime as one node of many: ids from shared blocks, messages routed by ownership."""
        scheduler = self.scheduler
        first, last = await anyio.to_thread.run_sync(cluster.reserve)
        scheduler.next_message, scheduler.id_limit = first - 1, last
        scheduler.cluster = cluster
        self.activation.new_actor_id = scheduler.new_actor_id
        self.activation.lease_of = cluster.lease_of
        self.health.processed = cluster.consumed
        self.mailboxes.holding = cluster.seen
        self.ingress.routed = cluster.route_inbox
        self.ingress.released = cluster.consumed
        cluster.adopt = scheduler.recover
        cluster.evict = scheduler.evict_shard
        cluster.wake = self.promises.wake
        cluster.waiting = self.promises.waiting_on_promises
        cluster.read_promise = store.promise
        cluster.resumed = scheduler.resumed
        cluster.suspended = scheduler.suspended
        cluster.is_suspended = scheduler.is_suspended
        cluster.read_actor = store.actor

    def attach(self, store: Backend) -> None:
        """The journal is owned: message and actor ids go on from where it left them."""
        self.writes.backend = store
        self.activation.backend = store
        self.scheduler.next_message = store.step_hwm
        self.activation.actor_hwm = store.actor_hwm
        self.compactor = Compactor(self.scheduler.registry, self.writes, store, self.scheduler.clock)
        self.forking = Forking(self.scheduler, self.mailboxes, self.activation, store, self.scheduler.clock)


async def _forget_reply(parts: _Parts, address: str, name: str) -> None:
    """A node's reply promise, read: delete it (a failure leaves it to the next start's clean-up)."""
    try:
        await parts.writes.write(Unit(ops=[TakePromise(address, name)]))
    except SteleError as exc:
        log.debug("the reply %s of %s stays until a later clean-up: %s", name, address, exc)


async def _guard(fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
    try:
        await fn(*args)
    except Exception:
        log.exception("runtime task failed")


__all__ = ("Limits", "ReplicationOptions", "Runtime")
