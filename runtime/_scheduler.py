"""Rounds: every ready actor takes its next message as a step, and the steps of a
round that finish without suspending commit together.

The loop side is built to allocate little per message: the tells of a loop
tick share one inbox unit and one future (:mod:`runtime._ingress`); a step
runs without a task until it first suspends (:mod:`runtime._drive`); and the
steps of a round that finish at once are handed to the writer together with
that tick's tells, with one callback for the round, so that a tell and the
step consuming it often share a transaction.

The scheduler is also the host a step talks to (:class:`runtime._step.StepHost`)
and what settles a step's outcome: committed, failed (nothing kept), or broken.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Callable
from typing import Any

import anyio
import msgspec

import storage
from actors import (
    ActorSuspendedError,
    CommitUnknownError,
    HandlerError,
    LeaseLostError,
    MessageValidationError,
    ReplyUnavailableError,
    RuntimeClosedError,
    SteleError,
    UnstorableValueError,
)
from actors._actor import ActorDescription, HandlerInfo
from storage import Done, Outcome, Unit

from ._activation import Activation
from ._cell import Cell, Msg
from ._cluster import Cluster, shard
from ._dead_letters import DeadLetters
from ._followers import Followers
from ._health import JournalHealth
from ._ingress import Ingress
from ._mailboxes import Mailboxes
from ._promises import Promises
from ._registry import Registry
from ._step import Step
from ._timers import Timers
from ._tracing import Tracing, tracer
from ._values import ENCODE_ERRORS, storable
from ._writes import Writes

log = logging.getLogger("stele.runtime")


class Scheduler:
    """Runs rounds of steps, settles their outcomes, and hosts them."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        registry: Registry,
        *,
        clock: Callable[[], float],
        rng: random.Random,
        spawn: Callable[..., None],
    ) -> None:
        self.loop = loop
        self.registry = registry
        self._encode = registry.codec.encode
        self.clock = clock
        self.rng = rng
        self.spawn: Callable[..., None] = spawn
        self.effect_limiter: anyio.CapacityLimiter | None = None
        self.tracing: Tracing | None = tracer()
        """Spans of messages, steps and effects; None unless OpenTelemetry is configured (runtime._tracing)."""
        # Set by the runtime once it has made them (they need each other).
        self.mailboxes: Mailboxes
        self.activation: Activation
        self.ingress: Ingress
        self.writes: Writes
        self.health: JournalHealth
        self.dead_letters: DeadLetters
        self.promises: Promises
        self.timers: Timers
        self.followers = Followers()
        """Readers of actors' streams, woken as streams commit."""
        self.closing = False
        self.inflight = 0
        """Steps under way (running or committing)."""
        self.parked = 0
        """Steps under way that wait for a promise or an ask's reply: durable waits, which
        resume from the journal at the next start, so closing does not wait for them."""
        self.idle: asyncio.Event = asyncio.Event()
        """Set when closing and every step still under way is parked (or none is)."""
        self.next_message = 0
        """The last message id given out (ids are never reused: see the backend's high-water mark)."""
        self.id_limit = 2**63 - 1
        """The last id of the block reserved (many nodes reserve ids in blocks from the database)."""
        self.cluster: Cluster | None = None
        """This node, when many nodes share the database."""
        self._scheduled = False

    # -- messages ---------------------------------------------------------------------

    def validate(
        self, address: str, msg: msgspec.Struct, desc: ActorDescription | None = None
    ) -> tuple[HandlerInfo, str, bytes, Any]:
        """``msg`` checked for ``address``: its handler, type name, payload, and decoded copy.

        ``desc``: the actor's description when its cell is known (the address
        was resolved, and checked, when the cell was made).
        """
        if desc is None:
            desc = self.registry.resolve(address)[0]
        info, name, decoder = self.registry.route(desc, msg)
        try:
            payload = self._encode(msg)
        except ENCODE_ERRORS as exc:
            raise UnstorableValueError(f"{name} for {address} cannot be stored: {storable(str(exc))}") from None
        try:
            # The handler gets the decoded copy: what it would see on replay.
            decoded = decoder.decode(payload)
        except msgspec.DecodeError as exc:
            raise MessageValidationError(f"invalid {name} for {address}: {exc}") from None
        return info, name, payload, decoded

    def prepare(
        self, address: str, msg: msgspec.Struct, sender: str | None = None, desc: ActorDescription | None = None
    ) -> Msg:
        """Validate ``msg`` for ``address`` and wrap it with a fresh message id."""
        info, name, payload, decoded = self.validate(address, msg, desc)
        self.next_message += 1
        if self.next_message > self.id_limit:
            self.next_message, self.id_limit = self.new_ids()
        made = Msg(self.next_message, info, decoded, name, payload, None, False, sender)
        if self.tracing is not None:
            self.tracing.sent(made, address)
        return made

    def new_ids(self) -> tuple[int, int]:
        """A fresh block of ids from the shared database (many nodes; a short blocking call, once per block)."""
        assert self.cluster is not None
        return self.cluster.reserve()

    def new_actor_id(self) -> int:
        """An id for a new actor, from the same reserved blocks (ids need only be unique)."""
        self.next_message += 1
        if self.next_message > self.id_limit:
            self.next_message, self.id_limit = self.new_ids()
        return self.next_message

    def owned(self, address: str) -> bool:
        """Whether this runtime owns ``address`` (always, unless many nodes share the database)."""
        cluster = self.cluster
        return cluster is None or cluster.owned(address)

    def fence(self, cell: Cell) -> tuple[int, int] | None:
        """The lease a step of ``cell`` must still hold when it commits: the one its state was loaded
        under (None: one runtime owns everything)."""
        return None if self.cluster is None else (shard(cell.address), cell.lease)

    def lease_now(self, address: str) -> tuple[int, int] | None:
        """The lease a write about ``address`` outside a step must hold: this node's on its shard now
        (None: one runtime owns everything)."""
        cluster = self.cluster
        return None if cluster is None else (shard(address), cluster.lease_of(address))

    def resumed(self, address: str) -> None:
        """``address`` is active again in the journal (resumed here or on another node): its kept
        messages run, the interrupted step first, against the journal read again."""
        cell = self.mailboxes.cell(address)
        cell.suspended = False
        cell.reason = ""
        if not cell.busy and not cell.loading:
            self.activation.unload(cell)
        self.mailboxes.make_ready(cell)

    def suspended(self) -> list[str]:
        """The actors held here that are suspended."""
        return [cell.address for cell in self.mailboxes if cell.suspended]

    def is_suspended(self, address: str) -> bool:
        """Whether ``address`` is held here, suspended."""
        cell = self.mailboxes.get(address)
        return cell is not None and cell.suspended

    def admit(self, address: str) -> None:
        """Backpressure: raise, making nothing, if ``address`` takes no message now."""
        self.mailboxes.admit(address)

    def deliver(self, address: str, msg: Msg) -> None:
        """A durable message (a timer due, an actor's ask) into its actor's mailbox.

        With many nodes, a message for an actor another node owns is already
        in the inbox table: that node is woken instead.
        """
        cluster = self.cluster
        if cluster is not None and not cluster.owned(address):
            cluster.route_inbox([(msg.step, address)])
            return
        self.mailboxes.deliver(self.mailboxes.cell(address), msg)

    def pending_timer(self, timer_id: str) -> Msg | None:
        """The pending (not cancelled) timer ``timer_id``."""
        return self.timers.get(timer_id)

    def commit(self, unit: Unit) -> asyncio.Future[Outcome]:
        """Journal one unit of a step under way."""
        return self.writes.commit(unit)

    async def take_promise(self, address: str, name: str, timeout: float | None) -> bytes | None:
        """The value resolved for a promise, or an actor's reply (the step is parked meanwhile)."""
        self.parked += 1
        self._maybe_idle()
        try:
            return await self.promises.take(address, name, timeout)
        finally:
            self.parked -= 1

    def check_cycle(self, caller: str, callee: str) -> None:
        """Refuse an ask cycle at once."""
        self.promises.check_cycle(caller, callee)

    def ask_begins(self, caller: str, callee: str) -> None:
        """``caller`` waits on ``callee``."""
        self.promises.ask_begins(caller, callee)

    def ask_ends(self, caller: str) -> None:
        """``caller`` waits on nobody."""
        self.promises.ask_ends(caller)

    # -- rounds -------------------------------------------------------------------------

    def schedule(self) -> None:
        """A cell became ready: run a round soon (once per loop tick)."""
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self.round)

    def round(self) -> None:
        """Step every ready actor once; hand finished steps to the writer together."""
        self._scheduled = False
        groups: list[tuple[list[Unit], Done]] = []
        tells = self.ingress.take()
        if tells is not None:
            groups.append(tells)  # inbox rows go before the steps consuming them
        units: list[Unit] = []
        steps: list[Step] = []
        to_load: list[Cell] = []
        for cell in self.mailboxes.take_ready():
            if cell.busy or cell.loading or not cell.mailbox or self.closing:
                continue
            if self.cluster is not None and not self.cluster.owned(cell.address):
                self._evict(cell)
                continue
            if cell.suspended or cell.failed is not None:
                self._refuse_asks(cell)
                continue
            if cell.instance is None:
                to_load.append(cell)
                continue
            self.activation.touch(cell)
            if cell.mailbox[0].recovered:
                # The actor's first message after a restart: the one it may have
                # been running when the process stopped. This attempt is counted
                # durably first, so a message that crashes the process every
                # time ends as a dead letter instead of crashing it forever.
                cell.busy = True
                cell.current = cell.mailbox.popleft()
                self.spawn(self.dead_letters.count_attempt, cell, cell.current)
                continue
            msg = cell.mailbox.popleft()
            recorded = None
            if cell.open_step is not None:
                if cell.open_step[0].step == msg.step:
                    recorded = cell.open_step
                cell.open_step = None
            cell.busy = True
            cell.current = msg
            self.inflight += 1
            step: Step | None = None
            try:
                step = Step(self, cell, msg, recorded)
                if self.tracing is not None:
                    self.tracing.begins(step)
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
            self.writes.submit_all(groups)
        if to_load:
            self.activation.activate(to_load)

    def _round_committed(self, steps: list[Step], outcomes: list[Outcome]) -> None:
        for step, outcome in zip(steps, outcomes, strict=True):
            try:
                self.step_committed(step, outcome)
            except Exception:  # never leave the round's other actors busy forever
                log.exception("%s: settling step %d failed", step.cell.address, step.msg.step)
                if step.cell.busy and step.cell.current is step.msg:
                    self._settle(step.cell)

    # -- outcomes ---------------------------------------------------------------------

    def step_committed(self, step: Step, outcome: Outcome) -> None:
        """A step's final unit committed (``outcome`` None) or failed."""
        if outcome is not None:
            self.step_failed(step, outcome)
            return
        if self.tracing is not None:
            self.tracing.ends(step, "suspended" if step.diverged else "ok" if step.ok else "error", step.error)
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
        self.mailboxes.consumed()
        cluster = self.cluster
        if cluster is not None:
            cluster.consumed(msg.step)
        cell.next_seq = step.last_seq + 1
        cell.registered = True
        cell.since_snapshot = 0 if step.snapshotted else cell.since_snapshot + (len(step.events) if step.ok else 0)
        cell.retry.reset()
        if step.needs_reload:
            self.activation.unload(cell)  # in-memory state saw events that were not kept
        if step.ok:
            for target, to in step.sends:
                target.inbox = True  # committed to the inbox with this step: its own step consumes it
                self.deliver(to, target)
            for target, to in step.timers:
                if cluster is not None and not cluster.owned(to):
                    cluster.route_inbox([(target.step, to)])  # its owner keeps the timer
                else:
                    self.timers.add(to, target)
            for cancelled in step.cancels:
                assert cancelled.timer_id is not None
                self.timers.forget(cancelled.timer_id)
        else:
            for cancelled in step.cancels:
                cancelled.cancelled = False  # the step kept nothing: the timer stands
        if msg.reply_to is not None:
            if cluster is not None and not cluster.owned(msg.reply_to[0]):
                cluster.route_promise(*msg.reply_to)  # the asker waits on another node
            else:
                self.promises.wake(msg.reply_to, step.reply_bytes)
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
        """A step could not be journaled: it keeps nothing; a durable message is retried."""
        if self.tracing is not None:
            self.tracing.ends(step, "failed", error)
        for cancelled in step.cancels:
            cancelled.cancelled = False  # nothing was committed: the timer stands
        self._message_failed(step.cell, step.msg, error)

    def step_broke(self, cell: Cell, msg: Msg, exc: Exception, step: Step | None = None) -> None:
        """A step raised where nothing should (building its unit, say): it fails alone.

        The message's own failure: it counts towards ``max_attempts``.
        """
        log.error("%s: step %d broke", cell.address, msg.step, exc_info=exc)
        if step is not None and self.tracing is not None:
            self.tracing.ends(step, "broken", exc)
        if step is not None:
            for cancelled in step.cancels:
                cancelled.cancelled = False
        problem = f"{cell.address}: step {msg.step} could not be completed: {type(exc).__qualname__}: {exc}"
        self._message_failed(cell, msg, SteleError(storable(problem)))

    def step_restarts(self, step: Step) -> None:
        """A streamed attempt failed after its handler saw chunks: the step runs again from its journal.

        Not the message's failure (nothing counts towards ``max_attempts``):
        the actor is reloaded, as after a crash, and its interrupted step
        resumes first, waiting out the attempt's backoff itself.
        """
        cell, msg = step.cell, step.msg
        self.activation.unload(cell)  # memory saw the handler's events of this run: reload the truth
        cell.mailbox.appendleft(msg)
        cell.busy = False
        cell.current = None
        self._step_done()
        if not self.closing:
            self.mailboxes.make_ready(cell)

    def streamed(self, address: str) -> None:
        """``address``'s stream committed more: wake its readers."""
        self.followers.wake(address)

    def _message_failed(self, cell: Cell, msg: Msg, error: BaseException) -> None:
        """``msg``'s step kept nothing; settle the message and release ``cell``.

        Only the message's own failures count towards ``max_attempts``: a value
        it made that cannot be stored, a step that broke. Journal trouble (I/O
        errors, a full disk, a busy or closed journal, a commit of unknown
        outcome) is not the message's fault: it is retried, in its place, for
        as long as it takes, so a second of failing disk never turns good
        messages into dead letters.
        """
        self.activation.unload(cell)  # memory may be ahead of the journal; reload the truth
        log.warning("%s: step %d failed: %s", cell.address, msg.step, error)
        own = not isinstance(error, storage.OperationalError | storage.LeaseLost)
        bury = False
        moved = isinstance(error, storage.LeaseLost)
        if msg.dropped or moved or isinstance(error, storage.Unconsumed):
            # Never accepted, already processed by a commit that landed, or the actor moved
            # to another node (which has the message if it is durable): dropped here.
            self.mailboxes.consumed()
            if self.cluster is not None:
                self.cluster.consumed(msg.step)
        elif msg.inbox and not self.closing:
            if own:
                msg.attempts += 1
            # The cell stays busy until the dead letter is written: nothing
            # newer may overtake the message if writing it fails (G4).
            bury = own and msg.attempts >= self.dead_letters.max_attempts
            if not bury:
                cell.mailbox.appendleft(msg)
                cell.retry.next()
        else:
            self.mailboxes.consumed()  # an ask not yet durable: it fails below
            if self.cluster is not None:
                # Not held here any more: if its unknown commit did make it durable, the node's
                # poll finds it in the inbox and runs it (one runtime alone runs it at its next start).
                self.cluster.consumed(msg.step)
        if msg.waiter is not None and not msg.waiter.done() and (not msg.inbox or moved):
            msg.waiter.set_exception(moved_error(cell, msg) if moved and msg.inbox else error)
        delay = cell.retry.last
        cell.busy = bury
        cell.current = msg if bury else None
        self._step_done()
        if bury:
            reason = f"its step failed {msg.attempts} times; last: {storable(str(error))}"
            self.spawn(self.dead_letters.bury, cell, msg, reason)
        elif isinstance(error, storage.CommitUnknown) and not self.closing:
            self.health.after_unknown_commit(cell, delay, msg if not bury and msg.inbox else None)
        elif cell.mailbox:
            self.loop.call_later(delay, self.mailboxes.make_ready, cell)

    def _settle(self, cell: Cell) -> None:
        cell.busy = False
        cell.current = None
        self._step_done()
        if self.closing:
            return
        if self.cluster is not None and not self.cluster.owned(cell.address):
            self._evict(cell)  # its shard went to another node while the step ran
            return
        if cell.mailbox:
            self.mailboxes.make_ready(cell)
        elif cell.instance is None and not cell.loading:
            self.mailboxes.forget(cell)
        self.activation.room_freed()

    def _step_done(self) -> None:
        self.inflight -= 1
        self._maybe_idle()

    def _maybe_idle(self) -> None:
        if self.closing and self.inflight <= self.parked:
            self.idle.set()

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
        self.mailboxes.consumed(len(cell.mailbox) - len(keep))
        cell.mailbox.clear()
        cell.mailbox.extend(keep)

    # -- starting and closing ---------------------------------------------------------------

    def evict_shard(self, lost: int) -> None:
        """This node lost shard ``lost``: drop what it holds of its actors (their owner has the durable)."""
        for cell in [c for c in self.mailboxes if shard(c.address) == lost]:
            self._evict(cell)

    def _evict(self, cell: Cell) -> None:
        """Drop ``cell``'s messages and instance: another node owns the actor now (its step under way,
        if any, fails its fence and is dropped when it settles)."""
        cluster = self.cluster
        for msg in cell.mailbox:
            if cluster is not None:
                cluster.consumed(msg.step)
            if msg.waiter is not None and not msg.waiter.done():
                msg.waiter.set_exception(moved_error(cell, msg))
        self.mailboxes.consumed(len(cell.mailbox))
        cell.mailbox.clear()
        if not cell.busy:
            cell.suspended = False
            cell.failed = None
            self.activation.unload(cell)

    def recover(self, pending: list[storage.Pending], recovered: bool = True) -> None:
        """Put every pending inbox message back in its actor's mailbox (timers back in the heap).

        ``recovered``: the messages may have been under way when their runtime
        stopped (at a start, a take-over): each one's first attempt is counted
        durably before it runs. Messages another node sent just now are not.
        """
        for row in pending:
            try:
                desc, _ = self.registry.resolve(row.target)
                info = self.registry.handler_named(desc, row.handler)
                message = self.registry.codec.decode(row.type, row.payload, position=-1)
            except SteleError as exc:
                log.error("inbox message %d to %s is kept but cannot be delivered: %s", row.id, row.target, exc)
                continue
            msg = Msg(row.id, info, message, row.type, row.payload, None, True, row.sender)
            if row.reply_to is not None and row.reply_name is not None:
                msg.reply_to = (row.reply_to, row.reply_name)
            if row.timer_id is not None and row.due is not None:
                msg.timer_id, msg.due = row.timer_id, row.due
                # Due during downtime: delivered at once by the timer task.
                self.timers.add(row.target, msg)
                continue
            msg.idempotency_key = row.idempotency_key
            msg.attempts = row.attempts
            msg.recovered = recovered
            self.deliver(row.target, msg)

    def fail_waiters(self, path: str, *, started: bool) -> None:
        """Answer every ask still waiting as the runtime closes; none may wait forever.

        A message durable in the inbox runs after the next start: its caller
        is told so (:class:`ReplyUnavailableError`, accepted), never that it
        was refused, or a resend would run it twice. A message that had not
        started and is not durable was never accepted
        (:class:`RuntimeClosedError`). An ask whose step was cut short while
        it was being made durable may or may not run after the next start
        (:class:`CommitUnknownError`).
        """
        closed = RuntimeClosedError(f"runtime on {path} is closing; the message was not processed")
        for cell in self.mailboxes:
            msgs = [*cell.mailbox, *([cell.current] if started and cell.current is not None else [])]
            for msg in msgs:
                if msg.waiter is None or msg.waiter.done():
                    continue
                if msg is cell.current and not msg.inbox:
                    msg.waiter.set_exception(
                        CommitUnknownError(
                            f"runtime on {path} closed while {cell.address} was making the ask durable: "
                            "it may or may not run after the next start; resend only with an idempotency key"
                        )
                    )
                elif msg.inbox:
                    msg.waiter.set_exception(
                        ReplyUnavailableError(
                            f"runtime on {path} is closing; {cell.address} has the message durably in its "
                            "inbox and processes it after the next start (do not resend it)"
                        )
                    )
                else:
                    msg.waiter.set_exception(closed)


def moved_error(cell: Cell, msg: Msg) -> SteleError:
    """What a caller waiting on ``msg`` is told when its actor moves to another node."""
    if msg.inbox:
        return ReplyUnavailableError(
            f"{cell.address} moved to another node: the message is durable in the inbox and runs there "
            "(do not resend it); no reply here"
        )
    return LeaseLostError(
        f"{cell.address} moved to another node before the ask was processed; nothing was kept: send it again"
    )
