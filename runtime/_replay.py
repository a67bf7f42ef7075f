"""Deterministic replay (G6): re-run handlers over a journal and compare.

Each completed step is re-run against the current code with its journaled
message, seed, time and effect results; the events it emits, the messages it
sends and its reply must match what the journal recorded, byte for byte. This
is how a code change is checked against production history before deploying.
"""

from __future__ import annotations

import datetime
import typing
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from random import Random
from typing import Any, Protocol

import msgspec

import storage
from actors import (
    Context,
    EffectError,
    Retry,
    SteleError,
    Stream,
)
from actors._actor import ActorDescription
from storage import STREAMED, EntryKind

from ._events import emit
from ._outcomes import answered, due_time, effect_name, promised, return_type
from ._rebuild import fold
from ._records import (
    NIL,
    EffectRecord,
    cancel_decoder,
    effect_decoder,
    message_decoder,
    reply_decoder,
    send_decoder,
    timer_decoder,
)
from ._registry import Registry, type_name
from ._stream import Recording, chunk_type, left_error, recorded_chunks, result_type

_encode = msgspec.msgpack.Encoder().encode


@dataclass(frozen=True)
class Divergence:
    """Where the current code did something other than the journal recorded."""

    actor: str
    position: int
    recorded: str
    current: str

    def __str__(self) -> str:
        return f"{self.actor} at position {self.position}: recorded {self.recorded}, now {self.current}"


@dataclass
class ReplayReport:
    """What a replay checked and found."""

    actors: int = 0
    steps: int = 0
    skipped: int = 0
    """Steps not checked: interrupted (no reply yet), or after a divergence."""
    divergences: list[Divergence] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the current code reproduces the journal exactly."""
        return not self.divergences


class _Diverged(Exception):
    def __init__(self, divergence: Divergence) -> None:
        super().__init__(str(divergence))
        self.divergence = divergence


class ReplayContext(Context):
    """The ``ctx`` a handler sees on replay: every answer comes from the journal."""

    def __init__(
        self,
        registry: Registry,
        desc: ActorDescription,
        instance: Any,
        head: storage.Entry,
        effects: list[tuple[storage.Entry, EffectRecord]],
        entries: list[storage.Entry] | None = None,
    ) -> None:
        record = message_decoder.decode(head.data)
        self._registry = registry
        self._desc = desc
        self._instance = instance
        self._head = head
        self._effects = effects
        self._entries = entries or []
        self._index = 0
        self._now = record.now
        self._rng = Random(record.seed)
        self.events: list[tuple[str, bytes]] = []
        self.sends: list[tuple[str, str, str, bytes]] = []
        self.timers: list[tuple[str, str, str, str, bytes, float]] = []
        self.cancels: list[str] = []
        self.diverged: Divergence | None = None
        self.open_stream: Recording | None = None
        """The stream the handler reads now; checked when the handler leaves it."""

    @property
    def effects_used(self) -> int:
        """How many journaled effects the handler has taken so far."""
        return self._index

    def _fail(self, position: int, recorded: str, current: str) -> _Diverged:
        self.diverged = Divergence(self._head.actor, position, recorded, current)
        return _Diverged(self.diverged)

    async def effect(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        retry: Retry | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        name = effect_name(fn)
        entry, record = self._next(name)
        if not record.ok:
            raise EffectError(record.error_type, record.error)
        try:
            return msgspec.msgpack.decode(record.result, type=return_type(fn))
        except msgspec.DecodeError as exc:
            raise self._fail(entry.position, f"a result of {name}", f"a type it no longer decodes as ({exc})") from None

    def _next(self, label: str) -> tuple[storage.Entry, EffectRecord]:
        """The next journaled effect-like entry, which must be ``label``."""
        self.close_stream()  # another effect begins: the handler left the open stream where it was
        index = self._index
        self._index += 1
        if index >= len(self._effects):
            raise self._fail(self._head.position, "no further effect", f"effect #{index} {label}")
        entry, record = self._effects[index]
        if entry.type != label:
            raise self._fail(entry.position, f"effect #{index} {entry.type}", f"effect #{index} {label}")
        self._now = max(self._now, record.finished)
        return entry, record

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
        item = chunk_type(return_type(fn))
        result = return_type(assemble) if assemble is not None else result_type(item)
        return _ReplayedStream(self, STREAMED + effect_name(fn), item, result)

    def open_recording(self, label: str, item: Any, result: Any) -> Recording:
        """A stream begins (at its first chunk): the next journaled effect must be it."""
        entry, record = self._next(label)
        chunks = recorded_chunks(self._entries, record.index, record.attempt)
        recording = Recording(entry, record, chunks, label=label, item=item, result_type=result, diverge=self._raise)
        self.open_stream = recording
        return recording

    def close_stream(self) -> None:
        """The handler left the open stream: it must have read what it read when it ran."""
        recording, self.open_stream = self.open_stream, None
        if recording is not None:
            recording.check()

    def _raise(self, position: int, recorded: str, current: str) -> typing.NoReturn:
        raise self._fail(position, recorded, current)

    async def ask(self, address: str, msg: msgspec.Struct, *, timeout: float | None = None) -> Any:
        _, record = self._next(f"ask:{address}")
        desc, _ = self._registry.resolve(address)
        return answered(record, address, self._registry.handler_for(desc, msg).reply_type)

    async def promise(self, name: str, *, timeout: float | None = None) -> Any:
        return promised(self._next(f"promise:{name}")[1])

    def now(self) -> float:
        return self._now

    def random(self) -> float:
        return self._rng.random()

    def uuid(self) -> uuid.UUID:
        return uuid.UUID(int=self._rng.getrandbits(128), version=4)

    @property
    def idempotency_key(self) -> str:
        return f"{self._head.actor}/{self._head.step}/{self._index}"

    async def tell(self, address: str, msg: msgspec.Struct) -> None:
        desc, _ = self._registry.resolve(address)
        info = self._registry.handler_for(desc, msg)
        self.sends.append((address, info.name, type_name(type(msg)), _encode(msg)))

    def schedule(self, when: float | datetime.datetime, address: str, msg: msgspec.Struct) -> str:
        due = due_time(self._now, when)
        desc, _ = self._registry.resolve(address)
        info = self._registry.handler_for(desc, msg)
        timer_id = f"{self._head.actor}/{self._head.step}/t{len(self.timers)}"
        self.timers.append((timer_id, address, info.name, type_name(type(msg)), _encode(msg), due))
        return timer_id

    def cancel(self, timer_id: str) -> None:
        for i, timer in enumerate(self.timers):
            if timer[0] == timer_id:
                del self.timers[i]
                return
        self.cancels.append(timer_id)  # whether it was pending then, the journal says below

    def emit(self, event: msgspec.Struct) -> None:
        self.events.append(emit(self._registry, self._desc, self._instance, event))


class _ReplayedStream(Stream[Any]):
    """``ctx.stream(...)`` on replay: the recorded chunks, from the step's entries."""

    def __init__(self, ctx: ReplayContext, label: str, item: Any, result: Any) -> None:
        self._ctx = ctx
        self._label = label
        self._item = item
        self._result_type = result
        self._recording: Recording | None = None

    async def __anext__(self) -> Any:
        recording = self._recording
        if recording is None:
            recording = self._recording = self._ctx.open_recording(self._label, self._item, self._result_type)
        if recording.finished:
            raise StopAsyncIteration
        if self._ctx.open_stream is not recording:  # closed when another effect began
            raise left_error(self._label)
        try:
            return recording.chunk()
        except (StopAsyncIteration, EffectError):
            if self._ctx.open_stream is recording:
                self._ctx.open_stream = None
            raise

    @property
    def result(self) -> Any:
        recording = self._recording
        if recording is None or (not recording.finished and self._ctx.open_stream is recording):
            raise SteleError(f"{self._label} has not ended: its result comes once the stream has")
        return recording.result()


class Histories(Protocol):
    """What replay reads: the actors, their entries, and the snapshot at a compacted actor's floor
    (``storage.Journal`` is one)."""

    def actor(self, address: str) -> storage.ActorInfo | None: ...
    def actors(self, type: str | None = None) -> list[storage.ActorInfo]: ...
    def entries(self, actor: str, from_seq: int = 0, kind: str | None = None) -> Iterator[storage.Entry]: ...
    def snapshot(self, actor: str, before: int | None = None) -> storage.Snapshot | None: ...


def replay(
    journal: Histories,
    registry: Registry,
    *,
    actor: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> ReplayReport:
    """Re-run every completed step (of one actor, or of all) and report divergences."""
    report = ReplayReport()
    infos = [journal.actor(actor)] if actor else journal.actors()
    for info in infos:
        if info is None:
            raise SteleError(f"the journal has no actor {actor!r}")
        desc = registry.actors.get(info.type)
        if desc is None:
            raise SteleError(f"{info.address}: no actor class of type {info.type!r} in the replayed code")
        report.actors += 1
        _replay_actor(journal, registry, desc, info, report)
        if progress is not None:
            progress(1)
    return report


def _steps(entries: Iterator[storage.Entry]) -> Iterator[list[storage.Entry]]:
    step: list[storage.Entry] = []
    for entry in entries:
        if entry.kind == EntryKind.MESSAGE and step:
            yield step
            step = []
        step.append(entry)
    if step:
        yield step


def _replay_actor(
    journal: Histories, registry: Registry, desc: ActorDescription, info: storage.ActorInfo, report: ReplayReport
) -> None:
    key = info.address.partition("/")[2]
    instance = desc.cls(key, desc.state_type())
    codec = registry.codec
    first = 0
    if info.floor:
        # A compacted history (or a fork) begins with the state at its floor.
        instance.state = _floor_state(journal, codec, info)
        first = info.floor + 1
    for step in _steps(journal.entries(info.address, first)):
        if step[0].kind != EntryKind.MESSAGE and step[0].seq == first:
            # The rest of a step the floor cut through: its events after the floor are history to keep.
            fold(
                desc,
                codec,
                instance,
                [(e.position, e.seq, e.type, e.data, None) for e in step if e.kind == EntryKind.EVENT],
            )
            report.skipped += 1
            continue
        if step[-1].kind != EntryKind.REPLY or step[0].kind != EntryKind.MESSAGE:
            report.skipped += 1  # interrupted: the runtime resumes it; nothing to compare yet
            continue
        before = _encode(instance.state)
        divergence = _replay_step(registry, desc, codec, instance, step)
        report.steps += 1
        if divergence is not None:
            report.divergences.append(divergence)
            report.skipped += sum(1 for _ in journal.entries(info.address, step[-1].seq + 1, kind=EntryKind.REPLY))
            return
        if reply_decoder.decode(step[-1].data).ok is False:
            instance.state = codec.decode(registry.names[desc.state_type], before)  # nothing was kept


def _floor_state(journal: Histories, codec: storage.Codec, info: storage.ActorInfo) -> Any:
    snap = journal.snapshot(info.address, info.floor + 1)
    if snap is None or snap.seq != info.floor or not snap.intact:
        raise storage.UndecodableEntry(
            f"{info.address} keeps its history from seq {info.floor} on, and its snapshot there "
            f"{'is missing' if snap is None or snap.seq != info.floor else 'does not match its checksum'}",
            position=-1,
            type_name=info.type,
            seq=info.floor,
        )
    return codec.decode(snap.type, snap.data, position=-1)


def _replay_step(
    registry: Registry, desc: ActorDescription, codec: storage.Codec, instance: Any, step: list[storage.Entry]
) -> Divergence | None:
    head = step[0]
    message_record = message_decoder.decode(head.data)
    handler = desc.handlers.get(message_record.handler)
    if handler is None:
        return Divergence(
            head.actor, head.position, f"a message for handler {message_record.handler!r}", "no such handler"
        )
    message = codec.decode(head.type, bytes(message_record.body), position=head.position)
    effects = [(e, effect_decoder.decode(e.data)) for e in step if e.kind == EntryKind.EFFECT]
    ctx = ReplayContext(registry, desc, instance, head, effects, step)
    instance.ctx = ctx
    coro = handler.fn(instance, message)
    ok, value = True, None
    try:
        coro.send(None)
    except StopIteration as stop:
        value = stop.value
    except _Diverged as diverged:
        return diverged.divergence
    except Exception as exc:
        ok, value = False, exc
    else:
        coro.close()
        return Divergence(head.actor, head.position, "a step that completed", "a handler that waits on something else")
    if ctx.diverged is not None:
        return ctx.diverged
    try:
        ctx.close_stream()  # the handler ended: a stream left open must be where it was left when it ran
    except _Diverged as diverged:
        return diverged.divergence
    return _compare(head, step, ctx, ok, value)


def _compare(
    head: storage.Entry, step: list[storage.Entry], ctx: ReplayContext, ok: bool, value: Any
) -> Divergence | None:
    actor = head.actor
    recorded_effects = sum(1 for e in step if e.kind == EntryKind.EFFECT)
    if ctx.effects_used < recorded_effects:
        entry = [e for e in step if e.kind == EntryKind.EFFECT][ctx.effects_used]
        return Divergence(actor, entry.position, f"effect #{ctx.effects_used} {entry.type}", "no further effect")
    reply_entry = step[-1]
    reply = reply_decoder.decode(reply_entry.data)
    if reply.ok != ok:
        now = "a reply" if ok else f"{type(value).__qualname__}: {value}"
        was = "a reply" if reply.ok else f"{reply.error_type}: {reply.error}"
        return Divergence(actor, reply_entry.position, was, now)
    if not ok:
        error_type = value.type_name if isinstance(value, EffectError) else type(value).__qualname__
        if (reply.error_type, reply.error) != (error_type, str(value)):
            return Divergence(
                actor, reply_entry.position, f"{reply.error_type}: {reply.error}", f"{error_type}: {value}"
            )
        return None
    events = [(e.type, e.data) for e in step if e.kind == EntryKind.EVENT]
    for i, (old, new) in enumerate(zip(events, ctx.events, strict=False)):
        if old != new:
            position = [e for e in step if e.kind == EntryKind.EVENT][i].position
            return Divergence(
                actor,
                position,
                f"event {old[0]} {msgspec.msgpack.decode(old[1])}",
                f"event {new[0]} {msgspec.msgpack.decode(new[1])}",
            )
    if len(events) != len(ctx.events):
        return Divergence(actor, reply_entry.position, f"{len(events)} event(s)", f"{len(ctx.events)} event(s)")
    sends = [(e, send_decoder.decode(e.data)) for e in step if e.kind == EntryKind.SEND]
    recorded_sends = [(s.to, s.handler, e.type, bytes(s.body)) for e, s in sends]
    if recorded_sends != ctx.sends:
        return Divergence(
            actor,
            reply_entry.position,
            f"sends {[s[:3] for s in recorded_sends]}",
            f"sends {[s[:3] for s in ctx.sends]}",
        )
    recorded_timers = [
        (t.id, t.to, t.handler, e.type, bytes(t.body), t.due)
        for e, t in ((e, timer_decoder.decode(e.data)) for e in step if e.kind == EntryKind.TIMER)
    ]
    if recorded_timers != ctx.timers:
        return Divergence(
            actor,
            reply_entry.position,
            f"timers {[t[:4] for t in recorded_timers]}",
            f"timers {[t[:4] for t in ctx.timers]}",
        )
    recorded_cancels = [cancel_decoder.decode(e.data).id for e in step if e.kind == EntryKind.CANCEL]
    if recorded_cancels != ctx.cancels:
        return Divergence(actor, reply_entry.position, f"cancels {recorded_cancels}", f"cancels {ctx.cancels}")
    try:
        now_value = _encode(value)
    except (TypeError, msgspec.EncodeError):
        return Divergence(actor, reply_entry.position, "an encodable reply", "a reply that cannot be encoded")
    was_value = bytes(reply.value) if reply.value is not None else bytes(NIL)
    if was_value != now_value:
        return Divergence(
            actor, reply_entry.position, f"reply {msgspec.msgpack.decode(was_value)!r}", f"reply {value!r}"
        )
    return None
