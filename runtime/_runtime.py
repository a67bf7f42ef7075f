"""``Runtime``: hosts actors over one journal file.

One event-loop thread runs every handler; one writer thread commits. The loop
side is built to allocate little per message (PERFORMANCE.md): tells of one
loop tick share one inbox unit and one future; ready actors are stepped in
rounds, and the steps of a round that finish without suspending are handed to
the writer together, with one callback for the round.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from types import TracebackType
from typing import Any

import anyio
import anyio.to_thread
import msgspec

import storage
from actors import (
    Actor,
    ActorSuspendedError,
    AskTimeoutError,
    BackpressureError,
    CommitUnknownError,
    HandlerError,
    MessageValidationError,
    ReplicationTimeout,
    ReplyUnavailableError,
    RuntimeClosedError,
    SteleError,
    UnstorableValueError,
)
from storage import ActorStatus, InboxRow, Op, Outcome, PutMeta, RecordKey, SetStatus, Store, Unit

from ._cell import Cell, Msg, first_outcome
from ._dead_letters import DeadLetters
from ._health import RETRY_MAX, JournalHealth
from ._idempotency import IdempotentIngress
from ._rebuild import Loaded, load
from ._registry import Registry
from ._step import Step
from ._timers import Timers
from ._values import ENCODE_ERRORS, scalar, storable, text
from ._waits import Waits

log = logging.getLogger("stele.runtime")

DURABILITIES = ("fsync", "normal", "replicated")


class _Shared(asyncio.Future[None]):
    """A future many tells await together; one caller's cancellation must not cancel it."""

    def cancel(self, msg: Any = None) -> bool:
        return False


class _Ingress:
    """The inbox rows of one loop tick's tells, committed as one unit."""

    __slots__ = ("future", "keys", "msgs", "rows", "top")

    def __init__(self, future: _Shared) -> None:
        self.future = future
        self.rows: list[InboxRow] = []
        self.keys: list[Op] = []
        self.msgs: list[tuple[Cell, Msg]] = []
        self.top = 0


class Runtime(IdempotentIngress, DeadLetters, JournalHealth, Waits):
    """Hosts actor classes over the journal at ``path``; an async context manager.

    ``durability`` is ``"fsync"`` (``synchronous=FULL``, the default),
    ``"normal"`` (``synchronous=NORMAL``: survives a process crash, may lose the
    last commits on power loss) or ``"replicated"`` (fsync, and every tell and
    ask is acknowledged only once its commit is in the replica).

    ``replicate`` is an ``s3://BUCKET/PATH?endpoint=…`` URL or a local
    directory: Litestream is started, supervised and stopped with the runtime,
    and ``rt.replication`` reports what is not yet replicated.
    ``restore_if_missing`` restores a missing journal from the replica first.
    ``lag_warning_s``: the age of the oldest unreplicated commit that logs a
    warning (logger ``stele.replication``). ``replication_timeout``: how long a
    replicated acknowledgement waits. ``litestream``: the binary to run;
    ``litestream_socket``: the control socket of a Litestream run outside,
    which is then only monitored, not started. ``replication_nudge_s``: the
    age of the oldest unreplicated commit at which the monitor asks Litestream
    for a sync (None: leave it to Litestream's timers). ``max_wal_bytes``
    (default 256 MiB) bounds the WAL with replication on: Litestream
    checkpoints it while it runs, and truncates it past this size; while
    Litestream is down, the runtime checkpoints and truncates it at this size
    (Litestream takes a full snapshot when it is back), says so in the log and
    in ``rt.replication``, and carries on serving.
    ``idempotency_retention_s``: how long an idempotency key keeps its first
    outcome. ``max_mailbox`` and ``max_pending`` bound the messages waiting
    for one actor and for all: beyond them ``tell`` and ``ask`` fail at once
    with :class:`BackpressureError` instead of growing without limit.
    ``max_attempts``: how often a message may fail by its own doing (a value
    that cannot be stored, a step that breaks; never the journal's trouble),
    or be under way when the process stops (counted from the first restart at which it is the
    first message its actor runs, when its attempt is marked in the inbox
    before it runs), before it becomes a dead letter and its actor carries on.
    ``effect_threads`` bounds the worker threads that synchronous effects
    (a blocking LLM SDK call) run in at once; they have threads of their own,
    so forty slow calls cannot stall loading actors or serving HTTP reads,
    which share anyio's default pool.
    ``max_active`` bounds the actors kept in memory. ``clock`` and
    ``rng`` are injectable for tests; ``grace`` is how long closing waits for
    in-flight steps before leaving them to recovery. ``vfs`` names an APSW VFS
    to open the journal through (fault injection).
    """

    def __init__(
        self,
        path: str,
        actors: Iterable[type[Actor]],
        *,
        durability: str = "fsync",
        max_active: int = 10_000,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        grace: float = 5.0,
        vfs: str | None = None,
        replicate: str | None = None,
        restore_if_missing: bool = False,
        lag_warning_s: float = 5.0,
        replication_timeout: float = 10.0,
        sync_interval: float = 1.0,
        litestream: str | None = None,
        litestream_socket: str | None = None,
        replication_nudge_s: float | None = 0.35,
        idempotency_retention_s: float = 24 * 3600.0,
        max_mailbox: int = 10_000,
        max_pending: int = 1_000_000,
        max_attempts: int = 5,
        effect_threads: int = 64,
        max_wal_bytes: int = storage.DEFAULT_MAX_WAL_BYTES,
    ) -> None:
        if durability not in DURABILITIES:
            raise ValueError(f"durability must be one of {DURABILITIES}, not {durability!r}")
        if durability == "replicated" and replicate is None:
            raise ValueError('durability="replicated" needs replicate=URL_OR_DIRECTORY')
        if max_active < 1:
            raise ValueError("max_active must be at least 1")
        if effect_threads < 1:
            raise ValueError("effect_threads must be at least 1")
        if not sync_interval >= 0.001:  # Litestream takes whole milliseconds; 0 ms fails at its start
            raise ValueError(f"sync_interval must be at least 0.001 s, not {sync_interval!r}")
        self.path = path
        self.registry = Registry(actors)
        self.durability = durability
        self.max_active = max_active
        self.clock = clock
        self.rng = rng or random.Random()
        self.grace = grace
        self.vfs = vfs
        self.replicate = replicate
        self.restore_if_missing = restore_if_missing
        self.lag_warning_s = lag_warning_s
        self.replication_timeout = replication_timeout
        self.sync_interval = sync_interval
        self.litestream = litestream
        self.litestream_socket = litestream_socket
        self.replication_nudge_s = replication_nudge_s
        self.idempotency_retention_s = idempotency_retention_s
        self.max_mailbox = max_mailbox
        self.max_pending = max_pending
        self.max_attempts = max_attempts
        self.effect_threads = effect_threads
        self.effect_limiter: anyio.CapacityLimiter | None = None
        """The worker threads synchronous effects run in (made at start, on the loop)."""
        if replicate is not None:  # checked now: a bad value fails here, not at start
            storage.Replication.check_max_wal_bytes(max_wal_bytes)
        self.max_wal_bytes = max_wal_bytes
        JournalHealth.__init__(self)
        self._pending = 0  # messages accepted and not yet consumed, in every mailbox
        self._keys_in_flight: dict[str, tuple[asyncio.Future[Any], tuple[str, str, bool]]] = {}
        self.timers = Timers(self)
        self._promise_waiters: dict[tuple[str, str], asyncio.Future[bytes]] = {}
        self._waiting_on: dict[str, str] = {}  # an actor whose step awaits an ask -> the asked actor
        self._replication: storage.Replication | None = None
        self.replaying = False
        self._store: Store | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._cells: dict[str, Cell] = {}
        self._active: dict[str, Cell] = {}  # insertion order is LRU order
        self._ready: list[Cell] = []
        self._waiting: list[Cell] = []  # to load once there is room under max_active
        self._loads_in_flight = 0
        self._activation_scheduled = False
        self._pump_scheduled = False
        self._ingress: _Ingress | None = None
        self._next_step = 0
        self._actor_hwm = 0
        self._inflight = 0
        self._idle: asyncio.Event | None = None
        self._closing = False
        self._open = False

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            raise SteleError("Runtime runs on anyio's asyncio backend") from None
        self.effect_limiter = anyio.CapacityLimiter(self.effect_threads)
        try:
            if self.replicate is not None:
                self._replication = storage.Replication(
                    os.path.realpath(self.path),
                    self.replicate,
                    lag_warning_s=self.lag_warning_s,
                    sync_interval=self.sync_interval,
                    binary=self.litestream,
                    external_socket=self.litestream_socket,
                    nudge_after_s=self.replication_nudge_s,
                    max_wal_bytes=self.max_wal_bytes,
                )
            restore = self._restore_missing if self.restore_if_missing and self._replication is not None else None
            open_store = functools.partial(
                Store.open,
                self.path,
                durability="fsync" if self.durability == "replicated" else self.durability,
                notify=self._notify,
                vfs=self.vfs,
                replication=self._replication,
                restore=restore,  # runs once the journal is owned, only if it is missing
            )

            def opened() -> Store:
                # Kept by the thread itself: a start cancelled while the file opens
                # still finds the store below, and closes it.
                self._store = open_store()
                return self._store

            store = await anyio.to_thread.run_sync(opened)
            assert store is self._store
            self._next_step = self._store.step_hwm + 1
            self._actor_hwm = self._store.actor_hwm
            pending = await anyio.to_thread.run_sync(self._store.pending)
            self._idle = asyncio.Event()
            self._open = True
            self.spawn(self._purge_keys)
            self.spawn(self.timers.run)
            self._recover(pending)
        except BaseException:
            # Whatever failed, and however (cancellation included), nothing stays
            # behind: tasks, the writer, Litestream and its threads, the owner lock.
            self._open = False
            self._closing = True
            left, self._store = self._store, None
            with anyio.CancelScope(shield=True):
                await self._cancel_tasks()
                if left is not None:
                    await anyio.to_thread.run_sync(left.close)
            self._closing = False
            raise
        return self

    async def __aexit__(
        self, tp: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop accepting, let in-flight steps finish within ``grace``, close the file."""
        if not self._open:
            return
        self._open = False
        self._closing = True
        self._fail_waiters(started=False)  # messages not started yet
        assert self._idle is not None and self._store is not None
        # Shielded: a close under a cancelled scope (`async with Runtime(...)`
        # inside `move_on_after`) must still stop Litestream and let go of the file.
        with anyio.CancelScope(shield=True):
            if self._inflight:
                with anyio.move_on_after(self.grace):
                    await self._idle.wait()
            await self._cancel_tasks()
            self._fail_waiters(started=True)  # and steps that did not finish within the grace
            self._flush_ingress()  # accepted tells not yet handed over go in before the writer stops
            await anyio.to_thread.run_sync(self._store.close)

    async def abandon(self) -> None:
        """Let go of everything as a crash would: nothing queued is committed (for tests)."""
        if not self._open:
            return
        self._open = False
        self._closing = True
        assert self._store is not None
        self._store.abandon()
        await self._cancel_tasks()

    async def _cancel_tasks(self) -> None:
        # Plain asyncio tasks rather than an anyio task group: a runtime may be
        # opened in one task and closed in another (a portal, a test fixture).
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _fail_waiters(self, *, started: bool) -> None:
        """Answer every ask still waiting as the runtime closes; none may wait forever.

        A message durable in the inbox runs after the next start: its caller
        is told so (:class:`ReplyUnavailableError`, accepted), never that it
        was refused, or a resend would run it twice. A message that had not
        started and is not durable was never accepted
        (:class:`RuntimeClosedError`). An ask whose step was cut short while
        it was being made durable may or may not run after the next start
        (:class:`CommitUnknownError`).
        """
        closed = RuntimeClosedError(f"runtime on {self.path} is closing; the message was not processed")
        for cell in self._cells.values():
            msgs = [*cell.mailbox, *([cell.current] if started and cell.current is not None else [])]
            for msg in msgs:
                if msg.waiter is None or msg.waiter.done():
                    continue
                if msg is cell.current and not msg.inbox:
                    msg.waiter.set_exception(
                        CommitUnknownError(
                            f"runtime on {self.path} closed while {cell.address} was making the ask durable: "
                            "it may or may not run after the next start; resend only with an idempotency key"
                        )
                    )
                elif msg.inbox:
                    msg.waiter.set_exception(
                        ReplyUnavailableError(
                            f"runtime on {self.path} is closing; {cell.address} has the message durably in its "
                            "inbox and processes it after the next start (do not resend it)"
                        )
                    )
                else:
                    msg.waiter.set_exception(closed)

    # -- public API ----------------------------------------------------------------

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
        if idempotency_key is not None:
            await self._keyed(idempotency_key, address, msg, None, durability, timeout)
            return
        await self._tell(address, msg, durability, timeout, None)

    async def _tell(
        self, address: str, msg: msgspec.Struct, durability: str | None, timeout: float | None, key: str | None
    ) -> None:
        if not self._open:
            raise RuntimeClosedError(f"runtime on {self.path} is not open")
        self._check_durability(durability)
        prepared = self.prepare(address, msg)
        self._admit(address)
        cell = self._cell(address)
        cell.failed = None  # new traffic retries a failed load (once per message)
        batch = self._ingress
        if batch is None:
            # No flush of its own: the pump that _make_ready schedules below hands
            # these rows to the writer together with the steps consuming them.
            batch = self._ingress = _Ingress(_Shared(loop=self.loop))
        batch.rows.append(prepared.inbox_row(address, self.clock()))
        batch.msgs.append((cell, prepared))
        batch.top = prepared.step
        if key is not None:
            batch.keys.append(RecordKey(key, address, prepared.step, None, self.clock(), "tell", prepared.handler.name))
        # Dispatched at once, before its inbox row commits: the writer commits in
        # submission order, so the step that consumes it lands with or after it,
        # and a step that fails to find its row is dropped (it was never accepted).
        prepared.inbox = True
        prepared.accepted = batch.future
        cell.mailbox.append(prepared)
        self._pending += 1
        self._make_ready(cell)
        await batch.future
        if (durability or self.durability) == "replicated":
            await self._replicated(timeout)

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
        if idempotency_key is not None:
            return await self._keyed(idempotency_key, address, msg, timeout, durability, None, ask=True)
        return await self._ask(address, msg, timeout, durability, None)

    async def _ask(
        self, address: str, msg: msgspec.Struct, timeout: float | None, durability: str | None, key: str | None
    ) -> Any:
        self._check_open()
        self._check_durability(durability)
        prepared = self.prepare(address, msg)
        prepared.idempotency_key = key
        known = self._cells.get(address)
        if known is not None and known.suspended:
            raise ActorSuspendedError(address, known.reason)
        self._admit(address)
        cell = self._cell(address)
        cell.failed = None  # new traffic retries a failed load (once per message)
        waiter: asyncio.Future[Any] = self.loop.create_future()
        prepared.waiter = waiter
        cell.mailbox.append(prepared)
        self._pending += 1
        self._make_ready(cell)
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

    async def resume(self, address: str) -> None:
        """Resume an actor suspended after non-determinism, once its code is fixed.

        Its kept messages are delivered again; the interrupted step re-runs
        against its journal (and is suspended again if it still diverges).
        """
        self._check_open()
        self.registry.resolve(address)
        info = await anyio.to_thread.run_sync(self.store.actor, address)
        cell = self._cells.get(address)
        if (info is None or info.status != ActorStatus.SUSPENDED) and not (cell is not None and cell.suspended):
            raise SteleError(f"{address} is not suspended")
        await self._write(Unit(ops=[SetStatus(address, ActorStatus.ACTIVE)]))
        cell = self._cell(address)
        cell.suspended = False
        cell.reason = ""
        if not cell.busy and not cell.loading:
            self._unload(cell)  # reload: the open step is read from the journal again
        self._make_ready(cell)

    async def annotate(self, key: str, value: str | int | float | None) -> None:
        """Durably record operator metadata in the journal (which module serves it, where)."""
        self._check_open()
        meta = PutMeta(text(key, "annotation key"), scalar(value, f"annotation {key!r}"))
        await self._write(Unit(ops=[meta]))

    def _admit(self, address: str) -> None:
        """Fail fast, writing nothing, when the mailboxes are full or the journal fails (backpressure).

        Refusing creates nothing: a cell is made only for a message that is let in.
        """
        self._admit_while_failing()
        cell = self._cells.get(address)
        waiting = len(cell.mailbox) if cell is not None else 0
        if waiting >= self.max_mailbox:
            raise BackpressureError(
                f"{address} has {waiting} messages waiting (max_mailbox={self.max_mailbox}); retry later"
            )
        if self._pending >= self.max_pending:
            raise BackpressureError(
                f"{self._pending} messages are waiting in all (max_pending={self.max_pending}); retry later"
            )

    async def _write(self, unit: Unit) -> None:
        """Commit one unit of the runtime's own bookkeeping."""
        done: asyncio.Future[Outcome] = self.loop.create_future()
        self.store.submit([unit], functools.partial(first_outcome, done))
        error = await done
        if error is not None:
            raise error

    @property
    def replication(self) -> storage.ReplicationStatus | None:
        """What is not yet in the replica (None without replication); never blocks."""
        return self._replication.status() if self._replication is not None else None

    async def _replicated(self, timeout: float | None) -> None:
        """Wait until every commit made so far is in the replica."""
        replication = self._replication
        commits = self.store.commits
        if replication is None or commits is None:
            raise ValueError('durability="replicated" needs a runtime opened with replicate=URL_OR_DIRECTORY')
        loop = self.loop
        done: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not done.done():
                done.set_result(None)

        def confirmed() -> None:  # called from a monitor thread
            loop.call_soon_threadsafe(settle)

        replication.wait_for(commits.count, confirmed)
        limit = timeout if timeout is not None else self.replication_timeout
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
        report = storage.restore(self.replicate, temp_path, binary=self.litestream)
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

    @property
    def stats(self) -> storage.WriterStats:
        """The journal writer's counters (batches, units, commit time)."""
        assert self._store is not None
        return self._store.stats

    # -- internals shared with Step ------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the runtime runs on."""
        assert self._loop is not None
        return self._loop

    @property
    def store(self) -> Store:
        """The owned journal."""
        assert self._store is not None
        return self._store

    def prepare(self, address: str, msg: msgspec.Struct, sender: str | None = None) -> Msg:
        """Validate ``msg`` for ``address`` and wrap it with a fresh step id."""
        desc, _ = self.registry.resolve(address)
        info = self.registry.handler_for(desc, msg)
        name = self.registry.names[info.message_type]
        try:
            payload = self.registry.codec.encode(msg)
        except ENCODE_ERRORS as exc:
            raise UnstorableValueError(f"{name} for {address} cannot be stored: {storable(str(exc))}") from None
        try:
            # The handler gets the decoded copy: what it would see on replay.
            decoded = self.registry.codec.decode(name, payload)
        except storage.UndecodableEntry as exc:
            raise MessageValidationError(f"invalid {name} for {address}: {_reason(exc)}") from None
        self._next_step += 1
        return Msg(self._next_step, info, decoded, name, payload, None, False, sender)

    def spawn(self, fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        """Run ``fn(*args)`` as a task the runtime cancels when it closes.

        The coroutine is created inside the task, so a task cancelled before
        it starts leaves no never-awaited coroutine behind.
        """
        task = self.loop.create_task(_guard(fn, *args))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the writer's callbacks --------------------------------------------------

    def _notify(self, results: list[tuple[storage.Done, list[Outcome]]]) -> None:
        # Writer thread: one wake-up of the loop per batch.
        self.loop.call_soon_threadsafe(_deliver, results)
        self._watch_journal()

    def _flush_ingress(self) -> None:
        if self._ingress is not None:  # else the pump took it already
            self.store.submit_all([self._take_ingress()])

    def _take_ingress(self) -> tuple[list[Unit], storage.Done]:
        batch, self._ingress = self._ingress, None
        assert batch is not None
        return [Unit(inbox=batch.rows, ops=batch.keys, top=batch.top)], functools.partial(self._ingress_done, batch)

    def _ingress_done(self, batch: _Ingress, outcomes: list[Outcome]) -> None:
        error = outcomes[0]
        for cell, msg in batch.msgs:
            msg.accepted = None
            if error is not None:
                msg.dropped = True
                if msg in cell.mailbox:
                    cell.mailbox.remove(msg)
                    self._pending -= 1
        if error is not None:
            batch.future.set_exception(error)
        else:
            batch.future.set_result(None)

    # -- scheduling ----------------------------------------------------------------

    def _check_open(self) -> None:
        if not self._open:
            raise RuntimeClosedError(f"runtime on {self.path} is not open")

    def _check_durability(self, durability: str | None) -> None:
        """Refuse a durability this call cannot have, before anything is accepted."""
        if durability is not None and durability not in DURABILITIES:
            raise ValueError(f"durability must be one of {DURABILITIES}, not {durability!r}")
        if durability == "replicated" and self._replication is None:
            raise ValueError(f'durability="replicated" needs a runtime opened with replicate=URL (on {self.path})')

    def _cell(self, address: str) -> Cell:
        cell = self._cells.get(address)
        if cell is None:
            desc, key = self.registry.resolve(address)
            cell = self._cells[address] = Cell(address, desc, key)
        return cell

    def _make_ready(self, cell: Cell) -> None:
        if not cell.queued:
            cell.queued = True
            self._ready.append(cell)
            if not self._pump_scheduled:
                self._pump_scheduled = True
                self.loop.call_soon(self._pump)

    def _pump(self) -> None:
        """Step every ready actor once; hand finished steps to the writer together."""
        self._pump_scheduled = False
        groups: list[tuple[list[Unit], storage.Done]] = []
        if self._ingress is not None:
            groups.append(self._take_ingress())  # inbox rows go before the steps consuming them
        ready, self._ready = self._ready, []
        units: list[Unit] = []
        steps: list[Step] = []
        to_load: list[Cell] = []
        for cell in ready:
            cell.queued = False
            if cell.busy or cell.loading or not cell.mailbox or self._closing:
                continue
            if cell.suspended or cell.failed is not None:
                self._refuse_asks(cell)
                continue
            if cell.instance is None:
                to_load.append(cell)
                continue
            active = self._active
            active.pop(cell.address, None)  # most recently used goes last
            active[cell.address] = cell
            if cell.mailbox[0].recovered:
                # The actor's first message after a restart: the one it may have
                # been running when the process stopped. This attempt is counted
                # durably first, so a message that crashes the process every
                # time ends as a dead letter instead of crashing it forever.
                cell.busy = True
                cell.current = cell.mailbox.popleft()
                self.spawn(self._count_attempt, cell, cell.current)
                continue
            msg = cell.mailbox.popleft()
            recorded = None
            if cell.open_step is not None:
                if cell.open_step[0].step == msg.step:
                    recorded = cell.open_step
                cell.open_step = None
            cell.busy = True
            cell.current = msg
            self._inflight += 1
            step: Step | None = None
            try:
                step = Step(self, cell, msg, recorded)
                if step.run():
                    units.append(step.unit())
                    steps.append(step)
            except Exception as exc:  # one step broke (a bug, a value nothing caught): it fails alone
                self.step_broke(cell, msg, exc, step)
        if units:
            groups.append((units, functools.partial(self._round_committed, steps)))
        if groups:
            # One hand-over: the tells' inbox rows and the steps consuming them
            # share a transaction, where the writer can skip the inbox altogether.
            self.store.submit_all(groups)
        if to_load:
            self._activate(to_load)

    def _round_committed(self, steps: list[Step], outcomes: list[Outcome]) -> None:
        for step, outcome in zip(steps, outcomes, strict=True):
            try:
                self.step_committed(step, outcome)
            except Exception:  # never leave the round's other actors busy forever
                log.exception("%s: settling step %d failed", step.cell.address, step.msg.step)
                if step.cell.busy and step.cell.current is step.msg:
                    self._settle(step.cell)

    def step_broke(self, cell: Cell, msg: Msg, exc: Exception, step: Step | None = None) -> None:
        """A step raised where nothing should (building its unit, say): it fails alone.

        The message's own failure: it counts towards ``max_attempts``.
        """
        log.error("%s: step %d broke", cell.address, msg.step, exc_info=exc)
        if step is not None:
            for cancelled in step.cancels:
                cancelled.cancelled = False
        problem = f"{cell.address}: step {msg.step} could not be completed: {type(exc).__qualname__}: {exc}"
        self._message_failed(cell, msg, SteleError(storable(problem)))

    def step_committed(self, step: Step, outcome: Outcome) -> None:
        """A step's final unit committed (``outcome`` None) or failed."""
        if outcome is not None:
            self.step_failed(step, outcome)
            return
        cell, msg = step.cell, step.msg
        if step.diverged is not None:
            log.error("%s suspended: %s", cell.address, step.diverged)
            cell.suspended = True
            cell.reason = str(step.diverged)
            cell.mailbox.appendleft(msg)  # not consumed: kept for after a fix
            if msg.waiter is not None and not msg.waiter.done():
                msg.waiter.set_exception(step.diverged)
            self._settle(cell)
            return
        self._pending -= 1  # consumed
        cell.next_seq = step.last_seq + 1
        cell.registered = True
        cell.since_snapshot = 0 if step.snapshotted else cell.since_snapshot + (len(step.events) if step.ok else 0)
        cell.retry_delay = 0.0
        if step.needs_reload:
            self._unload(cell)  # in-memory state saw events that were not kept
        if step.ok:
            for target, to in step.sends:
                target.inbox = True  # committed to the inbox with this step: its own step consumes it
                target_cell = self._cell(to)
                target_cell.mailbox.append(target)
                self._pending += 1
                self._make_ready(target_cell)
            for target, to in step.timers:
                self.timers.add(to, target)
            for cancelled in step.cancels:
                assert cancelled.timer_id is not None
                self.timers.forget(cancelled.timer_id)
        else:
            for cancelled in step.cancels:
                cancelled.cancelled = False  # the step kept nothing: the timer stands
        if msg.reply_to is not None:
            self._wake_promise(msg.reply_to, step.reply_bytes)
        waiter = msg.waiter
        if waiter is not None and not waiter.done():
            if step.ok:
                waiter.set_result(step.value)
            else:
                error = step.error
                assert error is not None
                type_name = error.type_name if isinstance(error, HandlerError) else type(error).__qualname__
                waiter.set_exception(HandlerError(cell.address, type_name, str(error)))
        self._settle(cell)

    def step_failed(self, step: Step, error: BaseException) -> None:
        """A step could not be journaled (or could not be completed): rebuild the actor,
        and retry a durable message."""
        for cancelled in step.cancels:
            cancelled.cancelled = False  # nothing was committed: the timer stands
        self._message_failed(step.cell, step.msg, error)

    def _message_failed(self, cell: Cell, msg: Msg, error: BaseException) -> None:
        """``msg``'s step kept nothing; settle the message and release ``cell``.

        Only the message's own failures count towards ``max_attempts``: a value
        it made that cannot be stored, a step that broke. Journal trouble (I/O
        errors, a full disk, a busy or closed journal, a commit of unknown
        outcome) is not the message's fault: it is retried, in its place, for
        as long as it takes, so a second of failing disk never turns good
        messages into dead letters.
        """
        self._unload(cell)  # memory may be ahead of the journal; reload the truth
        log.warning("%s: step %d failed: %s", cell.address, msg.step, error)
        own = not isinstance(error, storage.OperationalError)
        bury = False
        if msg.dropped or isinstance(error, storage.Unconsumed):
            self._pending -= 1  # never accepted, or already processed by a commit that landed: dropped
        elif msg.inbox and not self._closing:
            if own:
                msg.attempts += 1
            # The cell stays busy until the dead letter is written: nothing
            # newer may overtake the message if writing it fails (G4).
            bury = own and msg.attempts >= self.max_attempts
            if not bury:
                cell.mailbox.appendleft(msg)
                cell.retry_delay = min(RETRY_MAX, max(0.05, cell.retry_delay * 2))
        else:
            self._pending -= 1  # an ask not yet durable: it fails below
        if msg.waiter is not None and not msg.waiter.done() and not msg.inbox:
            msg.waiter.set_exception(error)
        delay = cell.retry_delay
        cell.busy = bury
        cell.current = msg if bury else None
        self._inflight -= 1
        if self._closing and self._inflight == 0:
            assert self._idle is not None
            self._idle.set()
        if bury:
            self.spawn(self._bury, cell, msg, f"its step failed {msg.attempts} times; last: {storable(str(error))}")
        elif isinstance(error, storage.CommitUnknown) and not self._closing:
            self._after_unknown_commit(cell, delay)
        elif cell.mailbox:
            self.loop.call_later(delay, self._make_ready, cell)

    def _settle(self, cell: Cell) -> None:
        cell.busy = False
        cell.current = None
        self._inflight -= 1
        if self._closing:
            if self._inflight == 0:
                assert self._idle is not None
                self._idle.set()
            return
        if cell.mailbox:
            self._make_ready(cell)
        elif cell.instance is None and not cell.loading:
            self._forget(cell)
        if self._waiting and not self._activation_scheduled:
            self._activation_scheduled = True
            self.loop.call_soon(self._activate_waiting)

    def _activate_waiting(self) -> None:
        self._activation_scheduled = False
        waiting, self._waiting = self._waiting, []
        if waiting and not self._closing:
            self._activate(waiting)

    def _refuse_asks(self, cell: Cell) -> None:
        """Asks to a suspended or unloadable actor fail; durable messages stay."""
        error: BaseException = cell.failed or ActorSuspendedError(cell.address, cell.reason)
        keep = [m for m in cell.mailbox if m.inbox]
        for msg in cell.mailbox:
            if msg.waiter is not None and not msg.waiter.done():
                if msg.inbox:
                    # Durable: it will run once the actor can. Failing the ask as
                    # if it never happened would invite a resend, so a second run.
                    unavailable = ReplyUnavailableError(
                        f"{cell.address}: the message is accepted and stays in the inbox until the actor "
                        f"can run; no reply now: {error}"
                    )
                    unavailable.__cause__ = error
                    msg.waiter.set_exception(unavailable)
                else:
                    msg.waiter.set_exception(error)
        self._pending -= len(cell.mailbox) - len(keep)
        cell.mailbox.clear()
        cell.mailbox.extend(keep)

    # -- activation and passivation ----------------------------------------------

    def _activate(self, cells: list[Cell]) -> None:
        """Load ``cells`` as far as ``max_active`` allows; the rest wait their turn."""
        for cell in cells:
            cell.loading = True  # requested: the pump leaves it alone until loaded
        room = self.max_active - len(self._active) - self._loads_in_flight
        if room < len(cells):
            room += self._evict(len(cells) - room)
        take = cells[: max(room, 0)]
        self._waiting.extend(cells[len(take) :])
        if take:
            self._loads_in_flight += len(take)
            self.spawn(self._load, take)

    def _evict(self, wanted: int) -> int:
        """Passivate up to ``wanted`` idle actors, least recently used first."""
        victims = []
        for address, cell in self._active.items():
            if cell.idle:
                victims.append(address)
                if len(victims) == wanted:
                    break
        for address in victims:
            self._unload(self._active[address])
        return len(victims)

    def _unload(self, cell: Cell) -> None:
        cell.instance = None
        self._active.pop(cell.address, None)
        self._forget(cell)

    def _forget(self, cell: Cell) -> None:
        if not (cell.mailbox or cell.busy or cell.loading or cell.suspended or cell.failed):
            self._cells.pop(cell.address, None)

    async def _load(self, cells: list[Cell]) -> None:
        codec = self.registry.codec
        store = self.store

        def load_all() -> list[Loaded | BaseException]:
            results: list[Loaded | BaseException] = []
            for cell in cells:
                try:
                    results.append(load(store, cell.desc, codec, cell.address, cell.key))
                except Exception as exc:
                    results.append(exc)
            return results

        results = await anyio.to_thread.run_sync(load_all)
        self._loads_in_flight -= len(cells)
        for cell, result in zip(cells, results, strict=True):
            cell.loading = False
            if isinstance(result, BaseException):
                error = result
                log.error("%s cannot be loaded: %s", cell.address, error)
                cell.failed = error
            else:
                self._activated(cell, result)
            self._make_ready(cell)

    def _activated(self, cell: Cell, loaded: Loaded) -> None:
        cell.instance = loaded.instance
        info = loaded.info
        cell.registered = info is not None
        if info is not None:
            cell.actor_id = info.id
        else:
            self._actor_hwm += 1
            cell.actor_id = self._actor_hwm
        cell.next_seq = (info.last_seq if info else 0) + 1
        cell.since_snapshot = loaded.events
        if info is not None and info.status == ActorStatus.SUSPENDED:
            cell.suspended = True
            cell.reason = info.reason or "suspended"
        if loaded.open_step:
            step_id = loaded.open_step[0].step
            for msg in cell.mailbox:
                if msg.step == step_id:
                    # Resume the interrupted step before anything newer.
                    cell.mailbox.remove(msg)
                    cell.mailbox.appendleft(msg)
                    cell.open_step = loaded.open_step
                    break
        self._active[cell.address] = cell

    def _recover(self, pending: list[storage.Pending]) -> None:
        """Put every pending inbox message back in its actor's mailbox."""
        for row in pending:
            try:
                desc, _ = self.registry.resolve(row.target)
                info = self.registry.handler_named(desc, row.handler)
                message = self.registry.codec.decode(row.type, row.payload, position=-1)
            except (SteleError, storage.StorageError) as exc:
                log.error("inbox message %d to %s is kept but cannot be delivered: %s", row.id, row.target, exc)
                continue
            recovered = Msg(row.id, info, message, row.type, row.payload, None, True, row.sender)
            if row.reply_to is not None and row.reply_name is not None:
                recovered.reply_to = (row.reply_to, row.reply_name)
            if row.timer_id is not None and row.due is not None:
                recovered.timer_id, recovered.due = row.timer_id, row.due
                # Due during downtime: delivered at once by the timer task.
                self.timers.add(row.target, recovered)
                continue
            recovered.idempotency_key = row.idempotency_key
            recovered.attempts = row.attempts
            recovered.recovered = True
            cell = self._cell(row.target)
            cell.mailbox.append(recovered)
            self._pending += 1
            self._make_ready(cell)

    def _deliver_timer(self, address: str, msg: Msg) -> None:
        """A timer fell due: into its actor's mailbox (it stays in the inbox until consumed)."""
        cell = self._cell(address)
        cell.mailbox.append(msg)
        self._pending += 1
        self._make_ready(cell)


def _deliver(results: list[tuple[storage.Done, list[Outcome]]]) -> None:
    for done, outcomes in results:
        try:
            done(outcomes)
        except Exception:
            log.exception("delivering a commit outcome failed")


async def _guard(fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
    try:
        await fn(*args)
    except Exception:
        log.exception("runtime task failed")


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return text.split(": ", 1)[-1] if "cannot be decoded" in text else text


__all__ = ("Runtime",)
