"""Streamed effects: ``async for chunk in self.ctx.stream(fn, *args)``.

A live stream journals, in its step's sequence:

- ``start`` when an attempt begins (attempt 2 and later start the stream over),
- ``chunk`` for each chunk, as it arrives,
- ``attempt`` for a failed attempt under a retry policy (with when the next is due),
- ``effect`` once at the end: the assembled result (or the error), whose type
  is ``stream:`` + the function's name, so that an effect journaled where a
  stream now runs, or the other way round, is a divergence.

Entries go through a :class:`ChunkLog`: at most one commit of the stream is in
flight, and what arrives meanwhile waits for the next, so a stream costs about
one unit per group commit, not one per chunk. Each chunk reaches the handler
as it arrives, before it is durable; anything durable the handler does next
(another effect, the step's end) is journaled after the chunks it saw: the
step closes the stream, which waits for its commits, before journaling
anything else. A crash therefore loses only chunks nothing durable depended
on, and the attempt that replaces them is marked as starting over.

A recorded stream (its ``effect`` entry is in the journal) is a
:class:`Recording`: its chunks come back from the journal, in order, without
calling the function.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import inspect
import typing
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, Protocol

import msgspec

from actors import EffectError, Retry, SteleError, Stream
from storage import STREAMED, Entry, EntryKind, Outcome, Unit

from ._outcomes import effect_name, return_type
from ._records import NIL, ChunkRecord, EffectRecord, StartRecord, chunk_decoder, start_decoder
from ._values import ENCODE_ERRORS, storable

_encode = msgspec.msgpack.Encoder().encode
_ONCE = Retry(max_attempts=1)
_ITERATORS = (
    collections.abc.AsyncIterator,
    collections.abc.AsyncGenerator,
    collections.abc.AsyncIterable,
    typing.AsyncIterator,
    typing.AsyncGenerator,
    typing.AsyncIterable,
)


class StartOver(BaseException):
    """A failed attempt whose chunks the handler saw: the step runs again from its journal.

    The handler cannot un-see those chunks, so the next attempt is not spliced
    into the same run: the step starts over as after a crash, replays what it
    journaled and runs the next attempt from its first chunk. A
    ``BaseException``, so that a handler's ``except Exception`` cannot swallow it.
    """


def chunk_type(hint: Any) -> Any:
    """The type a stream's chunks decode as: the item type of ``fn``'s return annotation (else ``Any``)."""
    origin = typing.get_origin(hint)
    if origin in _ITERATORS or hint in _ITERATORS:
        args = typing.get_args(hint)
        return args[0] if args else Any
    return Any


def result_type(chunks: Any) -> Any:
    """The type a stream's default assembled result decodes as."""
    if chunks is str or chunks is bytes or chunks is Any:
        return chunks
    return list[chunks]


def assembled(chunks: list[Any], item: Any) -> Any:
    """The default result of a stream: ``str`` or ``bytes`` chunks joined, others as a list."""
    if item is str or (chunks and all(isinstance(c, str) for c in chunks)):
        return "".join(chunks)
    if item is bytes or (chunks and all(isinstance(c, bytes) for c in chunks)):
        return b"".join(chunks)
    return list(chunks)


def recorded_chunks(entries: Sequence[Entry], index: int, attempt: int) -> list[tuple[int, bytes]]:
    """``(position, encoded chunk)`` of attempt ``attempt`` of stream ``index`` among a step's entries."""
    found = []
    for entry in entries:
        if entry.kind == EntryKind.CHUNK:
            record = chunk_decoder.decode(entry.data)
            if record.index == index and record.attempt == attempt:
                found.append((entry.position, bytes(record.value)))
    return found


def last_attempt(entries: Sequence[Entry], index: int) -> int:
    """The number of the last attempt of stream ``index`` a step's entries show begun (0: none)."""
    last = 0
    for entry in entries:
        if entry.kind == EntryKind.START:
            record = start_decoder.decode(entry.data)
            if record.index == index:
                last = max(last, record.attempt)
    return last


class Recording:
    """A streamed effect as the journal recorded it, handed back chunk by chunk.

    The handler must read it as it was read when it ran: as many chunks, then
    its end (or, if the handler left it early then, no further). Anything else
    is a divergence, raised through ``diverge``.
    """

    __slots__ = ("chunks", "diverge", "entry", "finished", "item", "label", "next", "record", "result_type")

    def __init__(
        self,
        entry: Entry,
        record: EffectRecord,
        chunks: list[tuple[int, bytes]],
        *,
        label: str,
        item: Any,
        result_type: Any,
        diverge: Callable[[int, str, str], NoReturn],
    ) -> None:
        self.entry = entry
        self.record = record
        self.chunks = chunks
        self.label = label
        self.item = item
        self.result_type = result_type
        self.diverge = diverge
        self.next = 0
        self.finished = False

    def chunk(self) -> Any:
        """The next recorded chunk; ``StopAsyncIteration`` or the recorded error at the end."""
        i = self.next
        if i < len(self.chunks):
            self.next += 1
            position, data = self.chunks[i]
            try:
                return msgspec.msgpack.decode(data, type=self.item)
            except msgspec.DecodeError as exc:
                self.diverge(position, f"chunk #{i} of {self.label}", f"a chunk type it no longer decodes as ({exc})")
        record = self.record
        if record.cut:
            self.diverge(
                self.entry.position,
                f"{self.label} left by the handler after {len(self.chunks)} chunk(s)",
                f"a handler reading chunk #{i}",
            )
        self.finished = True
        if not record.ok:
            raise EffectError(record.error_type, record.error)
        raise StopAsyncIteration

    def check(self) -> None:
        """The handler left the stream: it must have read what it read when it ran."""
        if self.finished or (self.record.cut and self.next == len(self.chunks)):
            return
        was = f"{len(self.chunks)} chunk(s)" + ("" if self.record.cut else " and the end")
        self.diverge(self.entry.position, f"{self.label} read for {was}", f"{self.label} left after {self.next}")

    def result(self) -> Any:
        """The recorded result (or the recorded error raised)."""
        record = self.record
        if not record.ok:
            raise EffectError(record.error_type, record.error)
        try:
            return msgspec.msgpack.decode(record.result, type=self.result_type)
        except msgspec.DecodeError as exc:
            self.diverge(self.entry.position, f"a result of {self.label}", f"a type it no longer decodes as ({exc})")


class ChunkLog:
    """A live stream's entries on their way to the journal, with one commit in flight at a time.

    ``build`` makes a unit of entries ``(kind, type, data)`` at the step's next
    sequence numbers; ``wake`` tells readers that the stream grew. The first
    failed commit stops the log: ``error`` says why, and the step is aborted.
    """

    __slots__ = ("_build", "_commit", "_inflight", "_pending", "_wake", "error")

    def __init__(
        self,
        build: Callable[[list[tuple[str, str, bytes]]], Unit],
        commit: Callable[[Unit], asyncio.Future[Outcome]],
        wake: Callable[[], None],
    ) -> None:
        self._build = build
        self._commit = commit
        self._wake = wake
        self._pending: list[tuple[str, str, bytes]] = []
        self._inflight: asyncio.Future[Outcome] | None = None
        self.error: BaseException | None = None

    def add(self, kind: str, type_: str, data: bytes) -> None:
        """Journal an entry: now if no commit of this stream is in flight, else with the next one."""
        self._pending.append((kind, type_, data))
        if self._inflight is None and self.error is None:
            self._flush()

    def _flush(self) -> None:
        items, self._pending = self._pending, []
        future = self._commit(self._build(items))
        self._inflight = future
        future.add_done_callback(self._committed)

    def _committed(self, future: asyncio.Future[Outcome]) -> None:
        self._inflight = None
        if future.cancelled():
            self.error = SteleError("a commit of the stream was cancelled")
            return
        outcome = future.result()
        if outcome is not None:
            self.error = outcome
            return
        self._wake()
        if self._pending:
            self._flush()

    async def drain(self) -> BaseException | None:
        """Wait until everything added is committed; the error that stopped the log, if one did."""
        while self.error is None and (self._inflight is not None or self._pending):
            if self._inflight is None:
                self._flush()
            inflight = self._inflight
            assert inflight is not None
            if inflight.done():
                # Its done callback is scheduled but has not run: awaiting a done future
                # would not yield, and this loop would spin without ever letting it run.
                await asyncio.sleep(0)
            else:
                await inflight  # its done callback (registered first) runs before this wakes up
        return self.error


class StreamStep(Protocol):
    """What a live stream needs of its step (:class:`runtime._step.Step`)."""

    effect_index: int
    journaled: Sequence[Entry]
    """The entries the step journaled before a crash or a start over (empty for a new step)."""

    def recorded_effect(self, index: int) -> tuple[Entry, EffectRecord] | None:
        """The journaled outcome of effect ``index``, if it has one."""
        ...

    def failed_attempts(self, index: int) -> list[EffectRecord]:
        """The journaled failed attempts of effect ``index``."""
        ...

    def stream_opens(self, stream: StepStream) -> None:
        """``stream`` is the step's open stream now (a recorded one before it is checked)."""
        ...

    def stream_ended(self, stream: StepStream) -> None:
        """``stream`` reached its end: there is nothing to close."""
        ...

    async def begin_effect(self) -> None:
        """Close the open stream and make the step durable, as before any effect."""
        ...

    def diverge(self, position: int, recorded: str, current: str) -> NoReturn:
        """Suspend the actor: the code no longer does what the journal recorded."""
        ...

    def abort(self, error: BaseException) -> NoReturn:
        """The step cannot go on: journaling failed."""
        ...

    def chunk_log(self) -> ChunkLog:
        """A log that journals entries at the step's next sequence numbers."""
        ...

    def clock(self) -> float:
        """The runtime's time."""
        ...

    def jitter(self, index: int, failures: int) -> float:
        """The journaled seed's draw for the backoff after failure ``failures`` of effect ``index``."""
        ...

    def advance(self, finished: float) -> None:
        """The step's time moves on to when an effect finished."""
        ...

    async def sleep_until(self, when: float) -> None:
        """Wait until ``when`` by the runtime's clock."""
        ...


_NEW, _LIVE, _REPLAY, _DONE = range(4)


class StepStream(Stream[Any]):
    """``ctx.stream(...)`` inside a running step: recorded, or live (and journaled as it goes)."""

    __slots__ = (
        "_agen",
        "_args",
        "_assemble",
        "_attempt",
        "_delivered",
        "_error",
        "_failures",
        "_fn",
        "_index",
        "_item",
        "_kwargs",
        "_label",
        "_left",
        "_log",
        "_mode",
        "_policy",
        "_recording",
        "_result",
        "_result_type",
        "_retry_at",
        "_started",
        "_step",
        "_timeout",
    )

    def __init__(
        self,
        step: StreamStep,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        retry: Retry | None,
        timeout: float | None,
        assemble: Callable[[list[Any]], Any] | None,
    ) -> None:
        self._step = step
        self._fn = fn
        self._args = args
        self._kwargs = kwargs
        self._label = STREAMED + effect_name(fn)
        self._item = chunk_type(return_type(fn))
        self._result_type = return_type(assemble) if assemble is not None else result_type(self._item)
        self._policy = retry or _ONCE
        self._timeout = timeout
        self._assemble = assemble
        self._mode = _NEW
        self._left = False
        self._index = -1
        self._recording: Recording | None = None
        self._log: ChunkLog | None = None
        self._agen: Any = None
        self._attempt = 0
        self._failures = 0
        self._retry_at: float | None = None
        self._delivered: list[Any] = []
        self._started = 0.0
        self._result: Any = None
        self._error: EffectError | None = None

    @property
    def replayed(self) -> bool:
        """Whether the chunks come from the journal."""
        return self._recording is not None

    @property
    def result(self) -> Any:
        if self._recording is not None and (self._mode == _DONE or self._recording.finished):
            return self._recording.result()
        if self._mode != _DONE:
            raise SteleError(f"{self._label} has not ended: its result comes once the stream has")
        if self._error is not None:
            raise self._error
        return self._result

    async def __anext__(self) -> Any:
        if self._left:
            raise left_error(self._label)
        recording = self._recording
        if recording is not None:
            if self._mode == _DONE:
                raise StopAsyncIteration
            try:
                return recording.chunk()
            except (StopAsyncIteration, EffectError):
                self._mode = _DONE
                self._step.stream_ended(self)
                raise
        if self._mode == _NEW:
            await self._begin()
            if self._recording is not None:
                return await self.__anext__()
        if self._mode == _DONE:
            raise StopAsyncIteration
        return await self._next_live()

    # -- beginning ---------------------------------------------------------------------

    async def _begin(self) -> None:
        step = self._step
        index = self._index = step.effect_index
        step.effect_index += 1
        recorded = step.recorded_effect(index)
        if recorded is not None:
            entry, record = recorded
            if entry.type != self._label:
                step.diverge(entry.position, f"effect #{index} {entry.type}", f"effect #{index} {self._label}")
            chunks = recorded_chunks(step.journaled, index, record.attempt)
            self._recording = Recording(
                entry,
                record,
                chunks,
                label=self._label,
                item=self._item,
                result_type=self._result_type,
                diverge=step.diverge,
            )
            step.advance(record.finished)
            step.stream_opens(self)
            return
        await step.begin_effect()
        step.stream_opens(self)
        self._mode = _LIVE
        self._log = step.chunk_log()
        earlier = step.failed_attempts(index)
        self._failures = len(earlier)
        self._attempt = last_attempt(step.journaled, index)
        if earlier:  # resumed during a backoff: the count goes on, the wait is not shortened
            self._retry_at = earlier[-1].retry_at

    # -- live ------------------------------------------------------------------------------

    async def _next_live(self) -> Any:
        log = self._log
        if log is not None and log.error is not None:
            await self._check_log()
        while True:
            failure: EffectRecord | None = None
            if self._agen is None:
                failure = await self._start_attempt()
            if failure is None:
                try:
                    if self._timeout is None:
                        value = await self._agen.__anext__()
                    else:
                        async with asyncio.timeout(self._timeout):
                            value = await self._agen.__anext__()
                except StopAsyncIteration:
                    self._agen = None
                    await self._end(self._outcome())
                    if self._error is not None:  # the chunks came, but no result could be made of them
                        raise self._error from None
                    raise
                except TimeoutError:
                    failure = self._failed("TimeoutError", f"{self._label} sent nothing for {self._timeout} s")
                except Exception as exc:
                    failure = self._failed(_error_type(exc), str(exc))
                else:
                    chunk = self._chunk(value)
                    if not isinstance(chunk, EffectRecord):
                        return chunk
                    failure = chunk
            await self._close_agen()
            self._failures += 1
            if self._failures >= self._policy.max_attempts:
                await self._end(failure)
                assert self._error is not None
                raise self._error
            jitter = self._step.jitter(self._index, self._failures)
            retry_at = failure.finished + self._policy.delay(self._failures, jitter)
            self._add(EntryKind.ATTEMPT, msgspec.structs.replace(failure, retry_at=retry_at))
            await self._drain()
            if self._delivered:
                raise StartOver
            self._retry_at = retry_at

    async def _start_attempt(self) -> EffectRecord | None:
        """Begin the next attempt: journal its start, call ``fn``; a record if that failed."""
        if asyncio.current_task() is None:
            # A step runs without a task until it first suspends; a timeout needs one.
            await asyncio.sleep(0)
        if self._retry_at is not None:
            await self._step.sleep_until(self._retry_at)
            self._retry_at = None
        self._attempt += 1
        self._delivered = []
        self._started = self._step.clock()
        self._add(EntryKind.START, StartRecord(self._index, self._attempt))
        try:
            it = self._fn(*self._args, **self._kwargs)
            if inspect.isawaitable(it):
                if self._timeout is None:
                    it = await it
                else:
                    async with asyncio.timeout(self._timeout):
                        it = await it
            if not hasattr(it, "__anext__") and hasattr(it, "__aiter__"):
                it = it.__aiter__()
            if not hasattr(it, "__anext__"):
                raise TypeError(f"{self._label} returned {type(it).__qualname__}, not an async iterator")
        except TimeoutError:
            return self._failed("TimeoutError", f"{self._label} did not begin within {self._timeout} s")
        except Exception as exc:
            return self._failed(_error_type(exc), str(exc))
        self._agen = it
        return None

    def _chunk(self, value: Any) -> Any:
        """Journal one chunk and give the handler its decoded copy (what a replay gives); a record if it cannot be."""
        try:
            data = _encode(value)
        except ENCODE_ERRORS as exc:
            problem = f"a chunk of {self._label} cannot be stored: {storable(str(exc))}"
            return self._failed("UnstorableValueError", problem)
        if type(value) is str and (self._item is str or self._item is Any):
            chunk = value  # a token: it decodes as itself
        else:
            try:
                chunk = msgspec.msgpack.decode(data, type=self._item)
            except msgspec.DecodeError as exc:
                return self._failed("TypeError", f"a chunk of {self._label} is not of its annotated type: {exc}")
        self._add(EntryKind.CHUNK, ChunkRecord(self._index, self._attempt, msgspec.Raw(data)))
        self._delivered.append(chunk)
        return chunk

    def _outcome(self, *, cut: bool = False) -> EffectRecord:
        """The record of this attempt's end: the assembled result (or why there is none)."""
        try:
            assemble = self._assemble
            value = assemble(self._delivered) if assemble is not None else assembled(self._delivered, self._item)
            data = _encode(value)
        except Exception as exc:  # the user's assemble, or a result that cannot be stored
            return self._failed(_error_type(exc), f"the result of {self._label} cannot be made: {storable(str(exc))}")
        started, finished = self._started, self._step.clock()
        record = EffectRecord(self._index, True, msgspec.Raw(data), started=started, finished=finished)
        return msgspec.structs.replace(record, attempt=self._attempt, cut=cut)

    def _failed(self, error_type: str, error: str) -> EffectRecord:
        return EffectRecord(
            self._index,
            False,
            NIL,
            storable(error_type),
            storable(error),
            started=self._started,
            finished=self._step.clock(),
            attempt=self._attempt,
        )

    async def _end(self, record: EffectRecord) -> None:
        """Journal the stream's end and wait until it is durable: what a replay returns from now on."""
        self._add(EntryKind.EFFECT, record)
        await self._drain()
        self._mode = _DONE
        self._step.stream_ended(self)
        self._step.advance(record.finished)
        if record.ok:
            self._result = msgspec.msgpack.decode(record.result, type=self._result_type)
        else:
            self._error = EffectError(record.error_type, record.error)

    def close_recorded(self) -> None:
        """The handler left a recorded stream: it must have read what it read when it ran."""
        if self._recording is not None and self._mode != _DONE:
            self._mode = _DONE
            self._left = True
            self._recording.check()

    async def close(self) -> None:
        """The handler left the stream (another effect begins, or the handler ended): journal where."""
        if self._recording is not None:
            self.close_recorded()
            return
        if self._mode != _LIVE:
            return
        self._left = True
        await self._close_agen()
        await self._end(self._outcome(cut=True))

    def _add(self, kind: str, record: msgspec.Struct) -> None:
        log = self._log
        assert log is not None
        log.add(kind, self._label, _encode(record))

    async def _check_log(self) -> None:
        log = self._log
        if log is not None and log.error is not None:
            await self._close_agen()
            self._mode = _DONE
            self._step.abort(log.error)

    async def _drain(self) -> None:
        log = self._log
        assert log is not None
        error = await log.drain()
        if error is not None:
            await self._close_agen()
            self._mode = _DONE
            self._step.abort(error)

    async def _close_agen(self) -> None:
        agen, self._agen = self._agen, None
        aclose = getattr(agen, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


def left_error(label: str) -> SteleError:
    """Reading on from a stream closed when another effect began (the same live and on replay)."""
    return SteleError(
        f"{label} was closed when the handler began another effect or left it: "
        "one stream is read at a time, so read a stream to its end before the next effect"
    )


def _error_type(exc: BaseException) -> str:
    return exc.type_name if isinstance(exc, EffectError) else type(exc).__qualname__
