"""A step: one message processed by one actor, the context its handler sees,
and the narrow door it has to the runtime that hosts it (:class:`StepHost`).

A step's events, sends, reply and the removal of its message from the inbox
commit in one unit (G2). Effects are journaled as they complete (G3); before
the first one runs, the step itself is made durable (its message entry, and an
inbox row for an ask), so that a crash resumes the same step with the same
step id, seed, time and journaled effect results.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import inspect
import logging
import random
import typing
import uuid
from collections.abc import Callable, Coroutine, Sequence
from random import Random
from typing import Any, NoReturn, Protocol

import anyio.to_thread
import msgspec

from actors import (
    Context,
    EffectError,
    NonDeterminismError,
    Retry,
    SteleError,
    Stream,
    UnknownEventError,
    UnknownTimerError,
    UnstorableValueError,
)
from storage import (
    ActorStatus,
    CancelTimer,
    Entry,
    EntryKind,
    EntryRow,
    InboxRow,
    Op,
    Outcome,
    PutPromise,
    RecordKey,
    SetStatus,
    SnapshotRow,
    TakePromise,
    Unit,
    entry_row,
    snapshot_row,
)

from ._cell import Cell, Msg
from ._drive import Resume
from ._events import emit
from ._outcomes import answered, due_time, effect_name, promised, return_type
from ._records import (
    NIL,
    CancelRecord,
    EffectRecord,
    MessageRecord,
    ReplyRecord,
    RequestRecord,
    SendRecord,
    TimerRecord,
    effect_decoder,
    message_decoder,
    request_decoder,
)
from ._registry import Registry
from ._reuse import PROMISE, arguments, digest
from ._stream import ChunkLog, StartOver, StepStream
from ._tracing import Tracing
from ._values import ENCODE_ERRORS, storable, text

log = logging.getLogger("stele.runtime")

_encode = msgspec.msgpack.Encoder().encode
_ONCE = Retry(max_attempts=1)


"""An idempotency key, with the step it started and (once known) the reply."""

# `ReplyRecord(True, value)` is the hot path's most common payload; it encodes as
# this fixed prefix followed by the encoded value (checked here, at import).
_REPLY_OK = b"\x82\xa2ok\xc3\xa5value"
assert _encode(ReplyRecord(True, msgspec.Raw(_encode(5)))) == _REPLY_OK + _encode(5)


class StepHost(Protocol):
    """The runtime as a step sees it: everything a step asks of the rest of the
    runtime goes through here (the scheduler implements it)."""

    registry: Registry
    rng: random.Random
    effect_limiter: anyio.CapacityLimiter | None
    """The threads synchronous effects run in."""
    tracing: Tracing | None
    """OpenTelemetry spans, when configured."""

    def clock(self) -> float:
        """The runtime's time (injectable): journaled as the step's time."""
        ...

    def spawn(self, fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        """Go on in a task the runtime cancels when it closes (a step that suspended)."""
        ...

    def commit(self, unit: Unit) -> asyncio.Future[Outcome]:
        """Journal ``unit`` of a step under way (see :mod:`runtime._writes`)."""
        ...

    def fence(self, cell: Cell) -> tuple[int, int] | None:
        """The lease a unit of ``cell``'s step must hold when it commits (many nodes), or None."""
        ...

    def prepare(self, address: str, msg: msgspec.Struct, sender: str | None = None) -> Msg:
        """Validate a message the step sends and give it its id."""
        ...

    def admit(self, address: str) -> None:
        """Backpressure for the step's own sends: raise if ``address`` takes nothing now."""
        ...

    def deliver(self, address: str, msg: Msg) -> None:
        """Put a message the step made durable (an actor's ask) into its actor's mailbox."""
        ...

    def pending_timer(self, timer_id: str) -> Msg | None:
        """The pending (not cancelled) timer ``timer_id``, for ``ctx.cancel``."""
        ...

    async def take_promise(self, address: str, name: str, timeout: float | None) -> bytes | None:
        """The value resolved for a promise, or an actor's reply (None after ``timeout``)."""
        ...

    def check_cycle(self, caller: str, callee: str) -> None:
        """Refuse an ask that would wait forever (``callee`` waits, through others, on ``caller``)."""
        ...

    def ask_begins(self, caller: str, callee: str) -> None:
        """``caller``'s step waits on ``callee`` now."""
        ...

    def ask_ends(self, caller: str) -> None:
        """``caller``'s step waits on nobody any more."""
        ...

    def step_committed(self, step: Step, outcome: Outcome) -> None:
        """The step's last unit committed (``outcome`` None) or failed."""
        ...

    def step_failed(self, step: Step, error: BaseException) -> None:
        """A unit of a step under way could not be journaled: the step keeps nothing."""
        ...

    def step_broke(self, cell: Cell, msg: Msg, exc: Exception, step: Step | None = None) -> None:
        """The step raised where nothing should (building its unit, say): it fails alone."""
        ...

    def step_restarts(self, step: Step) -> None:
        """The step runs again from its journal (a streamed attempt failed after its handler saw chunks)."""
        ...

    def streamed(self, address: str) -> None:
        """``address``'s stream grew (committed): wake its readers."""
        ...


_NO_RECORDS: list[Any] = []  # shared, never changed: a step resumed from its journal makes its own
_NO_ATTEMPTS: dict[int, list[EffectRecord]] = {}
_NO_REQUESTS: frozenset[int] = frozenset()


class Abort(BaseException):
    """The step cannot go on (journaling an effect failed); it is left for a retry.

    A ``BaseException`` so that a handler's ``except Exception`` cannot swallow it.
    """

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class Step(Context):
    """Runs one message through its handler and builds the unit that commits it."""

    __slots__ = (
        "_attempts",
        "_now",
        "_recorded",
        "_requests",
        "_rng",
        "_seed",
        "_seq",
        "broken",
        "cancels",
        "cell",
        "current_stream",
        "diverged",
        "durable",
        "effect_index",
        "error",
        "events",
        "finished",
        "host",
        "journaled",
        "last_seq",
        "msg",
        "ok",
        "reply_bytes",
        "sends",
        "snapshotted",
        "timers",
        "value",
    )

    def __init__(self, host: StepHost, cell: Cell, msg: Msg, recorded: list[Entry] | None) -> None:
        self.host = host
        self.cell = cell
        self.msg = msg
        self.events: list[tuple[str, bytes]] = []
        # Most steps send nothing and schedule nothing: these are made on first use.
        self.sends: Sequence[tuple[Msg, str]] = ()
        self.timers: Sequence[tuple[Msg, str]] = ()
        self.cancels: Sequence[Msg] = ()
        self.effect_index = 0
        self.ok = True
        self.value: Any = None
        self.error: BaseException | None = None
        self.diverged: NonDeterminismError | None = None
        self.broken: BaseException | None = None
        """An emit failed (bad event or applier): the step fails, whatever the handler does."""
        self.finished = False
        self.reply_bytes = b""
        self.last_seq = cell.next_seq - 1
        self.snapshotted = False
        self._rng: Random | None = None
        self._recorded: list[tuple[Entry, EffectRecord]] = _NO_RECORDS
        self._attempts: dict[int, list[EffectRecord]] = _NO_ATTEMPTS
        self._requests: set[int] | frozenset[int] = _NO_REQUESTS
        self.current_stream: StepStream | None = None
        """The stream the handler reads now (``ctx.stream``), closed before anything else is journaled."""
        self.journaled: Sequence[Entry] = recorded or ()
        """The entries this step journaled before it was interrupted (a resumed step)."""
        if recorded:
            head = message_decoder.decode(recorded[0].data)
            self._seed: int = head.seed
            self._now: float = head.now
            self.durable = True
            self._recorded = [(e, effect_decoder.decode(e.data)) for e in recorded[1:] if e.kind == EntryKind.EFFECT]
            self._attempts, self._requests = {}, set()
            for e in recorded[1:]:
                if e.kind == EntryKind.REQUEST:
                    self._requests.add(request_decoder.decode(e.data).index)
                if e.kind == EntryKind.ATTEMPT:
                    failed = effect_decoder.decode(e.data)
                    self._attempts.setdefault(failed.index, []).append(failed)
            self._seq = recorded[-1].seq + 1
        else:
            reuse = msg.reuse
            if reuse is not None and reuse.plan.active:  # a fork's message, while it matches its source
                self._seed, self._now = reuse.source.seed, reuse.source.now
            else:
                self._seed = host.rng.getrandbits(63)
                self._now = host.clock()
            self.durable = False
            self._seq = cell.next_seq

    # -- running ----------------------------------------------------------------

    def run(self) -> bool:
        """Run the handler until it finishes (True) or first suspends (False).

        A suspended step goes on in a task of the runtime and reports back itself;
        so does a step that could not be journaled (False too).
        """
        instance = self.cell.instance
        assert instance is not None
        instance.ctx = self
        coro = self.msg.handler.fn(instance, self.msg.message)
        try:
            yielded = coro.send(None)
        except StopIteration as stop:
            self._done(True, stop.value)
            return True
        except Abort as abort:  # before its first suspension, as after it (_go_on)
            self.finished = True
            self.host.step_failed(self, abort.error)
            return False
        except StartOver:
            self.finished = True
            self.host.step_restarts(self)
            return False
        except (Exception, asyncio.CancelledError) as exc:  # no task to cancel yet: the handler's own
            self._done(False, exc)
            return True
        self.host.spawn(self._go_on, coro, yielded)
        return False

    async def _go_on(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        try:
            value = await Resume(coro, yielded)
        except Abort as abort:
            self.finished = True
            self.host.step_failed(self, abort.error)
            return
        except StartOver:
            self.finished = True
            self.host.step_restarts(self)
            return
        except Exception as exc:
            self._done(False, exc)
        else:
            self._done(True, value)
        if self.current_stream is not None:  # the handler left a live stream: journal where, before the end
            try:
                await self._close_stream()
            except Abort as abort:
                self.host.step_failed(self, abort.error)
                return
            except NonDeterminismError:
                pass  # self.diverged: the unit suspends the actor
        try:
            unit = self.unit()
        except Exception as exc:  # this step alone fails; the actor and the runtime go on
            self.host.step_broke(self.cell, self.msg, exc, self)
            return
        outcome = await self._commit(unit)
        self.host.step_committed(self, outcome)

    def _done(self, ok: bool, value: Any) -> None:
        self.finished = True
        stream = self.current_stream
        if stream is not None and stream.replayed:  # a live one is closed by _go_on, which can wait
            self.current_stream = None
            with contextlib.suppress(NonDeterminismError):  # self.diverged: the unit suspends the actor
                stream.close_recorded()
        if self.broken is not None:
            ok, value = False, self.broken
        self.ok = ok
        if ok:
            self.value = value
        else:
            self.error = value

    async def _commit(self, unit: Unit) -> Outcome:
        return await self.host.commit(unit)

    # -- the commit unit ---------------------------------------------------------

    @property
    def needs_reload(self) -> bool:
        """Whether in-memory state may include events that will not be kept."""
        return (not self.ok and bool(self.events)) or self.broken is not None

    def unit(self) -> Unit:
        """The unit that ends this step (or, after non-determinism, suspends the actor)."""
        cell = self.cell
        at = self.host.clock()
        if self.diverged is not None:
            suspend = SetStatus(cell.address, ActorStatus.SUSPENDED, storable(str(self.diverged)))
            return Unit(register=cell.registration(at), ops=[suspend], fence=self.host.fence(cell))
        rows: list[EntryRow] = [] if self.durable else [self._message_row(at)]
        message = self.msg.step
        ident = cell.actor_id
        reply = self._reply()
        inbox: list[InboxRow] = []
        top = message
        if self.ok:
            seq = self._seq + len(rows)
            for name, data in self.events:
                rows.append(entry_row(ident, seq, message, EntryKind.EVENT, name, data, at))
                seq += 1
            for target, to in self.sends:
                record = SendRecord(to, target.handler.name, msgspec.Raw(target.payload), target.step)
                rows.append(entry_row(ident, seq, message, EntryKind.SEND, target.type_name, _encode(record), at))
                inbox.append(target.inbox_row(to, at))
                top = max(top, target.step)
                seq += 1
            for target, to in self.timers:
                assert target.timer_id is not None and target.due is not None
                timer = TimerRecord(
                    target.timer_id, to, target.handler.name, msgspec.Raw(target.payload), target.step, target.due
                )
                rows.append(entry_row(ident, seq, message, EntryKind.TIMER, target.type_name, _encode(timer), at))
                inbox.append(target.inbox_row(to, at))
                top = max(top, target.step)
                seq += 1
            for cancelled in self.cancels:
                assert cancelled.timer_id is not None
                record_data = _encode(CancelRecord(cancelled.timer_id))
                rows.append(entry_row(ident, seq, message, EntryKind.CANCEL, "timer", record_data, at))
                seq += 1
        reply_type = "error" if not self.ok else type(self.value).__qualname__
        rows.append(entry_row(ident, self._seq + len(rows), message, EntryKind.REPLY, reply_type, reply, at))
        self.last_seq = self._seq + len(rows) - 1
        snapshots: list[SnapshotRow] = []
        every = cell.desc.cls.snapshot_every
        if self.ok and self.events and every > 0 and cell.since_snapshot + len(self.events) >= every:
            state = cell.instance.state if cell.instance is not None else None
            state_name = self.host.registry.names[cell.desc.state_type]
            try:
                snapshots.append(snapshot_row(ident, self.last_seq, state_name, _encode(state), at))
            except ENCODE_ERRORS as exc:
                # A snapshot is only an optimisation (G5): the events are kept and
                # rebuild this state; the next snapshot is tried `every` events on.
                log.warning("%s: no snapshot at seq %d, its state cannot be stored: %s",
                            cell.address, self.last_seq, storable(str(exc)))  # fmt: skip
            self.snapshotted = True
        key = self.msg.idempotency_key
        ops: list[Op] = []
        if key:
            ops.append(RecordKey(key, cell.address, message, reply, at, "ask", self.msg.handler.name))
        self.reply_bytes = reply
        if self.msg.reply_to is not None:  # an actor's ask: its reply resolves the asker's promise
            caller, name = self.msg.reply_to
            ops.append(PutPromise(caller, name, reply, at, replace=True))
        if self.ok:
            ops += [CancelTimer(m.timer_id) for m in self.cancels if m.timer_id is not None]
        return Unit(
            inbox=inbox,
            journal=rows,
            snapshots=snapshots,
            consumed=[message] if self.msg.inbox else (),
            register=cell.registration(at),
            ops=ops,
            top=top,
            fence=self.host.fence(cell),
        )

    def _reply(self) -> bytes:
        """The encoded reply record; a reply that cannot be encoded fails the step."""
        if self.ok:
            try:
                return _REPLY_OK + _encode(self.value)
            except ENCODE_ERRORS as exc:
                self.ok = False
                self.error = UnstorableValueError(
                    f"the reply of {self.cell.address} cannot be stored: {storable(str(exc))}"
                )
        error = self.error
        assert error is not None
        return _encode(ReplyRecord(False, NIL, storable(_error_type(error)), storable(str(error))))

    def _message_row(self, at: float) -> EntryRow:
        msg = self.msg
        record = MessageRecord(msg.handler.name, msgspec.Raw(msg.payload), self._seed, self._now, msg.sender)
        return entry_row(self.cell.actor_id, self._seq, msg.step, EntryKind.MESSAGE, msg.type_name, _encode(record), at)

    # -- Context ---------------------------------------------------------------

    def emit(self, event: msgspec.Struct) -> None:
        if self.finished:
            raise SteleError(f"{self.cell.address}: emit() after its handler returned")
        try:
            self.events.append(emit(self.host.registry, self.cell.desc, self.cell.instance, event))
        except UnknownEventError:
            raise  # nothing was applied: the handler may catch it and go on
        except BaseException as exc:
            # An event that cannot be journaled, or an applier that raised: state
            # may be half-changed, so the step fails, whatever the handler does.
            self.broken = exc
            raise

    async def effect(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        retry: Retry | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        index = self.effect_index
        self.effect_index += 1
        name = effect_name(fn)
        if index < len(self._recorded):
            return self._replayed(index, name, fn)
        await self._make_durable()
        args_digest = arguments(args, kwargs)
        if self.msg.reuse is not None:
            reused = self.msg.reuse.take(index, name, args_digest)
            if reused is not None:
                return await self._reused(reused, name, fn)
        policy = retry or _ONCE
        earlier = self._attempts.get(index, [])
        attempt = len(earlier) + 1
        if earlier:  # resumed during a backoff: the count goes on, the wait is not shortened
            await self._sleep_until(earlier[-1].retry_at)
        while True:
            record = await self._attempt(fn, args, kwargs, index, name, timeout, attempt)
            if record.ok or attempt >= policy.max_attempts:
                break
            unit = Random(hash((self._seed, index, attempt))).random()  # replay never draws it
            retry_at = record.finished + policy.delay(attempt, unit)
            record = msgspec.structs.replace(record, retry_at=retry_at)
            await self._append(self._effect_row(EntryKind.ATTEMPT, name, record))
            await self._sleep_until(retry_at)
            attempt += 1
        record = msgspec.structs.replace(record, args=args_digest)
        await self._append(self._effect_row(EntryKind.EFFECT, name, record))
        self._now = max(self._now, record.finished)
        return self._outcome(record, fn, -1, name)

    async def _reused(self, record: EffectRecord, label: str, fn: Callable[..., Any] | None = None) -> Any:
        """Journal a result a fork reuses from its source (marked ``reused``) and give it to the handler."""
        await self._append(self._effect_row(EntryKind.EFFECT, label, record))
        self._now = max(self._now, record.finished)
        return self._outcome(record, fn, -1, label) if fn is not None else record

    async def _make_durable(self) -> None:
        """Before anything leaves the step (an effect, a wait), journal the step itself."""
        if self.current_stream is not None:  # another effect begins: the open stream ends where the handler left it
            await self._close_stream()
        if self.durable:
            if asyncio.current_task() is None:
                # A step resumed from its journal is already durable, and runs without
                # a task until it first suspends (Step.run): suspend here, so that what
                # follows (anyio's threads and cancel scopes) runs in the step's task.
                await asyncio.sleep(0)
            return
        if self.msg.accepted is not None:
            # A tell runs before its inbox row commits; nothing may leave the
            # step for a message that might not be accepted.
            try:
                # Every tell of one tick shares this future, and a step runs
                # without a task until it suspends: awaiting the shared future
                # directly would find it already marked as awaited by the
                # previous step ("await wasn't used with future"). Each step
                # waits on a future of its own instead.
                await asyncio.shield(self.msg.accepted)
            except Exception as exc:
                raise Abort(exc) from None
        await self._append(self._message_row(self.host.clock()), durable_ask=not self.msg.inbox)
        self.durable = True

    async def ask(self, address: str, msg: msgspec.Struct, *, timeout: float | None = None) -> Any:
        index = self.effect_index
        self.effect_index += 1
        label = f"ask:{address}"
        desc, _ = self.host.registry.resolve(address)
        reply_type = self.host.registry.handler_for(desc, msg).reply_type
        if index < len(self._recorded):
            entry, record = self._recorded[index]
            if entry.type != label:
                self._diverge(entry.position, f"effect #{index} {entry.type}", f"effect #{index} {label}")
            return answered(record, address, reply_type)
        await self._make_durable()
        me = self.cell.address
        if self.msg.reuse is not None:
            payload = self.host.prepare(address, msg, sender=me).payload
            reused = self.msg.reuse.take(index, label, digest(payload))
            if reused is not None:
                return answered(await self._reused(reused, label), address, reply_type)
        name = f"reply:{me}/{self.msg.step}/{index}"
        self.host.check_cycle(me, address)
        if index not in self._requests:  # after a crash the request is already out: never twice
            target = self.host.prepare(address, msg, sender=me)
            target.reply_to = (me, name)
            target.inbox = True
            request = RequestRecord(index, address, target.handler.name, msgspec.Raw(target.payload), target.step)
            at = self.host.clock()
            data = _encode(request)
            row = entry_row(self.cell.actor_id, self._seq, self.msg.step, EntryKind.REQUEST, target.type_name, data, at)
            await self._append(row, inbox=[target.inbox_row(address, at)])
            self._requests = {*self._requests, index}
            self.host.deliver(address, target)  # into the callee's mailbox, now durable
        started = self.host.clock()
        self.host.ask_begins(me, address)
        try:
            value = await self.host.take_promise(me, name, timeout)
        finally:
            self.host.ask_ends(me)
        if value is None:
            record = EffectRecord(index, False, NIL, "AskTimeoutError", f"no reply from {address} within {timeout} s")
        else:
            record = EffectRecord(index, True, msgspec.Raw(value))
        record = msgspec.structs.replace(record, started=started, finished=self.host.clock())
        take = [TakePromise(me, name)] if value is not None else []
        await self._append(self._effect_row(EntryKind.EFFECT, label, record), ops=take)
        self._now = max(self._now, record.finished)
        return answered(record, address, reply_type)

    async def promise(self, name: str, *, timeout: float | None = None) -> Any:
        text(name, "promise name")
        index = self.effect_index
        self.effect_index += 1
        label = f"promise:{name}"
        if index < len(self._recorded):
            entry, record = self._recorded[index]
            if entry.type != label:
                self._diverge(entry.position, f"effect #{index} {entry.type}", f"effect #{index} {label}")
            return promised(record)
        await self._make_durable()
        if self.msg.reuse is not None:
            reused = self.msg.reuse.take(index, label, PROMISE)
            if reused is not None:
                return promised(await self._reused(reused, label))
        started = self.host.clock()
        value = await self.host.take_promise(self.cell.address, name, timeout)
        if value is None:
            record = EffectRecord(
                index, False, NIL, "PromiseError", f"no value for promise {name!r} within {timeout} s"
            )
        else:
            record = EffectRecord(index, True, msgspec.Raw(value))
        record = msgspec.structs.replace(record, started=started, finished=self.host.clock())
        # Taking the value and journaling it are one commit: it is used exactly once.
        take = [TakePromise(self.cell.address, name)] if value is not None else []
        await self._append(self._effect_row(EntryKind.EFFECT, label, record), ops=take)
        self._now = max(self._now, record.finished)
        return promised(record)

    async def _attempt(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        index: int,
        name: str,
        timeout: float | None,
        attempt: int,
    ) -> EffectRecord:
        """Run ``fn`` once; its outcome as a record (nothing journaled yet)."""
        tracing = self.host.tracing
        span = tracing.effect(self, name, index, attempt) if tracing is not None else None
        started = self.host.clock()
        try:
            with anyio.fail_after(timeout) if timeout is not None else contextlib.nullcontext():
                if inspect.iscoroutinefunction(fn):
                    running = fn(*args, **kwargs)
                    value = await (running if tracing is None else tracing.task_within(span, running))
                else:
                    # A thread cannot be stopped: on timeout it is left to finish alone.
                    call: Callable[..., Any] = functools.partial(fn, *args, **kwargs)
                    call = call if tracing is None else tracing.within(span, call)
                    value = await anyio.to_thread.run_sync(
                        call, abandon_on_cancel=timeout is not None, limiter=self.host.effect_limiter
                    )
        except TimeoutError:
            record = EffectRecord(index, False, NIL, "TimeoutError", f"effect {name} took longer than {timeout} s")
        except Exception as exc:
            record = EffectRecord(index, False, NIL, storable(_error_type(exc)), storable(str(exc)))
        else:
            try:
                record = EffectRecord(index, True, msgspec.Raw(_encode(value)))
            except ENCODE_ERRORS as exc:
                problem = f"the result of effect {name} cannot be stored: {storable(str(exc))}"
                record = EffectRecord(index, False, NIL, "UnstorableValueError", problem)
        record = msgspec.structs.replace(record, started=started, finished=self.host.clock(), attempt=attempt)
        if tracing is not None:
            tracing.effect_done(span, record)
        return record

    def _effect_row(self, kind: EntryKind, name: str, record: EffectRecord) -> EntryRow:
        return entry_row(self.cell.actor_id, self._seq, self.msg.step, kind, name, _encode(record), record.finished)

    async def _sleep_until(self, when: float) -> None:
        clock = self.host.clock
        sleep_until = getattr(clock, "sleep_until", None)
        if sleep_until is not None:
            await sleep_until(when, asyncio.Event())
        elif when > clock():
            await anyio.sleep(when - clock())

    def _replayed(self, index: int, name: str, fn: Callable[..., Any]) -> Any:
        entry, record = self._recorded[index]
        if entry.type != name:
            self._diverge(entry.position, f"effect #{index} {entry.type}", f"effect #{index} {name}")
        self._now = max(self._now, record.finished)
        return self._outcome(record, fn, entry.position, name)

    def _outcome(self, record: EffectRecord, fn: Callable[..., Any], position: int, name: str) -> Any:
        if not record.ok:
            raise EffectError(record.error_type, record.error)
        try:
            return msgspec.msgpack.decode(record.result, type=return_type(fn))
        except msgspec.DecodeError as exc:
            self._diverge(position, f"a result of effect {name} that no longer decodes", str(exc))

    def _diverge(self, position: int, recorded: str, current: str) -> typing.NoReturn:
        self.diverged = NonDeterminismError(self.cell.address, position, recorded, current)
        raise self.diverged

    async def _append(
        self,
        row: EntryRow,
        *,
        durable_ask: bool = False,
        ops: Sequence[Op] = (),
        inbox: Sequence[InboxRow] = (),
    ) -> None:
        """Journal ``row`` (at this step's next seq) now; abort the step if that fails.

        ``durable_ask``: the step's message is an ask, made durable with this
        row: it goes into the inbox too, with its idempotency key, so that a
        step resumed after a crash records its reply under that key.
        """
        cell, msg = self.cell, self.msg
        rows: list[InboxRow] = list(inbox)
        first: list[Op] = []
        if durable_ask:
            rows.insert(0, msg.inbox_row(cell.address, row.at, key=msg.idempotency_key))
            if msg.idempotency_key:
                key = msg.idempotency_key
                first.append(RecordKey(key, cell.address, msg.step, None, row.at, "ask", msg.handler.name))
        unit = Unit(
            ops=[*first, *ops],
            inbox=rows,
            journal=[row],
            register=cell.registration(row.at),
            top=msg.step,
            fence=self.host.fence(cell),
        )
        outcome = await self._commit(unit)
        if outcome is not None:
            raise Abort(outcome)
        self._seq += 1
        cell.registered = True
        if durable_ask:
            msg.inbox = True

    # -- streams (runtime._stream) -------------------------------------------------

    def stream(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        retry: Retry | None = None,
        timeout: float | None = None,
        assemble: Callable[[list[Any]], Any] | None = None,
        **kwargs: Any,
    ) -> Stream[Any]:
        return StepStream(self, fn, args, kwargs, retry=retry, timeout=timeout, assemble=assemble)

    async def _close_stream(self) -> None:
        stream, self.current_stream = self.current_stream, None
        if stream is not None:
            await stream.close()

    def recorded_effect(self, index: int) -> tuple[Entry, EffectRecord] | None:
        """The journaled outcome of effect ``index``, if this step has one."""
        return self._recorded[index] if index < len(self._recorded) else None

    def failed_attempts(self, index: int) -> list[EffectRecord]:
        """The journaled failed attempts of effect ``index``."""
        return self._attempts.get(index, [])

    def stream_opens(self, stream: StepStream) -> None:
        """``stream`` is the open stream now; a recorded one left open before it is checked."""
        previous, self.current_stream = self.current_stream, stream
        if previous is not None and previous is not stream:
            previous.close_recorded()  # a live one was closed by begin_effect

    def stream_ended(self, stream: StepStream) -> None:
        """``stream`` reached its end: nothing to close."""
        if self.current_stream is stream:
            self.current_stream = None

    async def begin_effect(self) -> None:
        """What every live effect does first: close the open stream, make the step durable."""
        await self._make_durable()

    def diverge(self, position: int, recorded: str, current: str) -> NoReturn:
        """Raise (and remember) the non-determinism found at journal ``position``."""
        self._diverge(position, recorded, current)

    def abort(self, error: BaseException) -> NoReturn:
        """The step cannot go on: ``error`` kept a unit out of the journal."""
        raise Abort(error)

    def chunk_log(self) -> ChunkLog:
        """A log journaling a live stream's entries at this step's next sequence numbers."""
        host, address = self.host, self.cell.address
        return ChunkLog(self._entries_unit, host.commit, lambda: host.streamed(address))

    def _entries_unit(self, items: list[tuple[str, str, bytes]]) -> Unit:
        cell, message, seq = self.cell, self.msg.step, self._seq
        at = self.host.clock()
        ident = cell.actor_id
        rows = [entry_row(ident, seq + i, message, kind, name, data, at) for i, (kind, name, data) in enumerate(items)]
        self._seq = seq + len(rows)
        return Unit(journal=rows, register=cell.registration(at), top=message)

    def clock(self) -> float:
        """The runtime's time."""
        return self.host.clock()

    def jitter(self, index: int, failures: int) -> float:
        """The backoff draw after failure ``failures`` of effect ``index`` (as ``effect`` draws it)."""
        return Random(hash((self._seed, index, failures))).random()

    def advance(self, finished: float) -> None:
        """The step's time moves on to when an effect finished."""
        self._now = max(self._now, finished)

    async def sleep_until(self, when: float) -> None:
        """Wait until ``when`` by the runtime's clock (a virtual clock included)."""
        await self._sleep_until(when)

    def now(self) -> float:
        return self._now

    def random(self) -> float:
        return self._random().random()

    def uuid(self) -> uuid.UUID:
        return uuid.UUID(int=self._random().getrandbits(128), version=4)

    def _random(self) -> Random:
        if self._rng is None:
            self._rng = Random(self._seed)
        return self._rng

    @property
    def idempotency_key(self) -> str:
        return f"{self.cell.address}/{self.msg.step}/{self.effect_index}"

    def schedule(self, when: float | datetime.datetime, address: str, msg: msgspec.Struct) -> str:
        due = due_time(self._now, when)
        target = self.host.prepare(address, msg, sender=self.cell.address)
        target.due = due
        timers = self.timers
        if not isinstance(timers, list):
            timers = self.timers = []
        target.timer_id = f"{self.cell.address}/{self.msg.step}/t{len(timers)}"
        target.inbox = True
        timers.append((target, address))
        return target.timer_id

    def cancel(self, timer_id: str) -> None:
        timers = self.timers
        for i, (target, _) in enumerate(timers):
            if target.timer_id == timer_id and isinstance(timers, list):  # scheduled by this very step: drop it
                del timers[i]
                return
        pending = self.host.pending_timer(timer_id)
        if pending is None:
            raise UnknownTimerError(f"no pending timer {timer_id!r} (it fired, was cancelled, or never existed)")
        pending.cancelled = True  # not delivered meanwhile; undone if this step keeps nothing
        cancels = self.cancels
        if not isinstance(cancels, list):
            cancels = self.cancels = []
        cancels.append(pending)

    async def tell(self, address: str, msg: msgspec.Struct) -> None:
        target = self.host.prepare(address, msg, sender=self.cell.address)
        self.host.admit(address)  # backpressure applies to actors' sends too
        sends = self.sends
        if not isinstance(sends, list):
            sends = self.sends = []
        sends.append((target, address))


def _error_type(exc: BaseException) -> str:
    return exc.type_name if isinstance(exc, EffectError) else type(exc).__qualname__
