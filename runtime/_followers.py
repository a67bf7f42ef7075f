"""Readers of actors' streams: what they are handed, and how they learn that a stream grew.

A reader asks for the entries of an actor's stream from an offset (the
sequence number of the entry in the actor's journal), gets them in order,
and continues after the last one it got: every entry exactly once, whether it
reads on at once, after a disconnect, or after a restart of the server. Only
committed entries are ever read, so what a reader saw is never taken back.

While a reader follows an address, each commit of that actor's stream wakes
it (:class:`Followers`); it also reads again every ``POLL_S`` seconds, so a
wake-up missed for any reason costs latency, never an entry.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

import storage
from storage import STREAMED, EntryKind

from ._records import chunk_decoder, effect_decoder, start_decoder

POLL_S = 1.0
"""How often a follower reads again without being woken."""


class StreamItem(msgspec.Struct, frozen=True, omit_defaults=True):
    """One entry of an actor's stream, as readers get it.

    ``kind`` is ``start`` (attempt 1 begins), ``restart`` (attempt ``attempt``
    starts over: drop the earlier attempt's chunks), ``chunk`` (``value``),
    ``failed`` (the attempt failed: ``error_type``, ``error``; the next one is
    due at ``retry_at``) or ``end`` (``ok``; ``value`` is the assembled result,
    or ``error_type`` and ``error`` say why there is none; ``cut``: the
    handler left the stream before its end).
    """

    offset: int
    """The entry's sequence number in the actor's journal: resume from ``offset + 1``."""
    kind: str
    effect: str
    """The streamed function's name."""
    step: int
    """The id of the message whose step streamed it."""
    index: int
    """Which effect of that step."""
    attempt: int
    at: float
    value: Any = None
    ok: bool = True
    error_type: str | None = None
    error: str | None = None
    retry_at: float | None = None
    cut: bool = False


def stream_item(entry: storage.Entry) -> StreamItem:
    """A stream entry (see :meth:`storage.Reads.stream_entries`) as a reader gets it."""
    effect = entry.type.removeprefix(STREAMED)
    if entry.kind == EntryKind.CHUNK:
        chunk = chunk_decoder.decode(entry.data)
        value = msgspec.msgpack.decode(chunk.value)
        return StreamItem(entry.seq, "chunk", effect, entry.step, chunk.index, chunk.attempt, entry.at, value)
    if entry.kind == EntryKind.START:
        start = start_decoder.decode(entry.data)
        kind = "start" if start.attempt <= 1 else "restart"
        return StreamItem(entry.seq, kind, effect, entry.step, start.index, start.attempt, entry.at)
    record = effect_decoder.decode(entry.data)
    if entry.kind == EntryKind.ATTEMPT:
        return StreamItem(
            entry.seq, "failed", effect, entry.step, record.index, record.attempt, entry.at, None, False,
            record.error_type, record.error, record.retry_at,
        )  # fmt: skip
    value = msgspec.msgpack.decode(record.result) if record.ok else None
    return StreamItem(
        entry.seq, "end", effect, entry.step, record.index, record.attempt, entry.at, value, record.ok,
        record.error_type or None, record.error or None, None, record.cut,
    )  # fmt: skip


class Watch:
    """One address followed by readers: ``grew`` is set when its stream commits more."""

    __slots__ = ("grew", "readers")

    def __init__(self) -> None:
        self.grew = asyncio.Event()
        self.readers = 0


class Followers:
    """The addresses readers follow, woken as their streams commit (on the runtime's loop)."""

    def __init__(self) -> None:
        self._watches: dict[str, Watch] = {}
        self.closed = False

    def watch(self, address: str) -> Watch:
        """Follow ``address`` (until :meth:`unwatch`)."""
        watch = self._watches.get(address)
        if watch is None:
            watch = self._watches[address] = Watch()
        watch.readers += 1
        return watch

    def unwatch(self, address: str, watch: Watch) -> None:
        """One reader of ``address`` is gone."""
        watch.readers -= 1
        if watch.readers <= 0 and self._watches.get(address) is watch:
            del self._watches[address]

    def wake(self, address: str) -> None:
        """``address``'s stream committed more: its readers read again."""
        watch = self._watches.get(address)
        if watch is not None:
            grew, watch.grew = watch.grew, asyncio.Event()
            grew.set()

    def close(self) -> None:
        """The runtime closes: every reader reads what is left and ends."""
        self.closed = True
        for address in list(self._watches):
            self.wake(address)

    def __len__(self) -> int:
        return sum(watch.readers for watch in self._watches.values())
