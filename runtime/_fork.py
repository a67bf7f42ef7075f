"""Fork: a new actor that begins with another's state at a journal position.

The fork's history starts with one ``fork`` entry (seq 1) naming its source,
the position and the replica it came from, and a snapshot at the same seq
holding the state it began with; its floor is that seq (nothing before it can
be asked about). The source is only read. With ``replay_after``, the source's
messages after the position are delivered to the fork again, one at a time,
running the current code with the source's seeds and times while its effects
match the source's (see :mod:`runtime._reuse`).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import anyio.to_thread
import msgspec

import storage
from actors import ForkError, HandlerError
from storage import ActorRow, EntryKind, SetFloor, Unit, entry_row, snapshot_row

from ._activation import Activation
from ._mailboxes import Mailboxes
from ._rebuild import load
from ._records import ForkRecord
from ._reuse import Reuse, SourceStep, StepReuse, source_step
from ._scheduler import Scheduler
from ._values import ENCODE_ERRORS, storable

_encode = msgspec.msgpack.Encoder().encode


class ForkReport(msgspec.Struct):
    """What a fork made and, with ``replay_after``, what the re-delivered messages did."""

    address: str
    """The fork."""
    source: str
    position: int
    """The source's journal position the fork began at."""
    seq: int
    """The source's sequence number there."""
    redelivered: int = 0
    """Source messages delivered to the fork again."""
    failed: int = 0
    """Of those, the ones whose handler raised (the fork goes on, as the source did)."""
    reused: int = 0
    """Effect results taken from the source's journal instead of running the effect."""
    ran: int = 0
    """Effects that ran for real (from the first divergence on)."""
    divergence: str | None = None
    """Where the fork first did otherwise than the source (None: never)."""
    diverged_at: int | None = None
    """The source's journal position there."""


class Forking:
    """The parts of a running runtime a fork uses."""

    def __init__(
        self,
        scheduler: Scheduler,
        mailboxes: Mailboxes,
        activation: Activation,
        live: storage.Reads,
        clock: Callable[[], float],
    ) -> None:
        self.scheduler = scheduler
        self.mailboxes = mailboxes
        self.activation = activation
        self.live = live
        self.clock = clock

    async def fork(
        self,
        address: str,
        *,
        at: int | None,
        to: str,
        replay_after: bool,
        history: storage.Reads,
        replica: str = "",
        timestamp: str = "",
    ) -> ForkReport:
        """Make ``to`` from ``address``'s state at position ``at`` (None: its latest) in ``history``."""
        registry = self.scheduler.registry
        desc, key = registry.resolve(address)
        to_desc, _ = registry.resolve(to)
        if to_desc is not desc:
            raise ForkError(f"a fork of {address} must be a {desc.type_name} too, and {to} is a {to_desc.type_name}")
        if to == address:
            raise ForkError(f"a fork needs a new address, not its source's ({address})")
        mailboxes = self.mailboxes
        if mailboxes.get(to) is not None or self.live.actor(to) is not None:
            raise ForkError(f"{to} already exists: a fork needs an address with no history")
        cell = mailboxes.cell(to)
        # Held out of the scheduler's way while its first entries commit: a
        # message for it meanwhile waits and finds the fork's history loaded.
        cell.loading = True
        try:
            seq, position, state, steps = await anyio.to_thread.run_sync(
                _read, history, registry.codec, desc, key, address, at, replay_after
            )
            try:
                data = _encode(state)
            except ENCODE_ERRORS as exc:
                raise ForkError(
                    f"the state of {address} at position {position} cannot be stored: {storable(str(exc))}"
                ) from None
            self.activation.actor_hwm += 1
            ident = self.activation.actor_hwm
            self.scheduler.next_message += 1
            message = self.scheduler.next_message
            now = self.clock()
            record = _encode(ForkRecord(address, position, seq, replay_after, replica, timestamp))
            unit = Unit(
                register=ActorRow(ident, to, desc.type_name, now),
                journal=[entry_row(ident, 1, message, EntryKind.FORK, "fork", record, now)],
                snapshots=[snapshot_row(ident, 1, registry.names[desc.state_type], data, now)],
                ops=[SetFloor(to, 1)],
                top=message,
            )
            outcome = await self.scheduler.commit(unit)
            if outcome is not None:
                raise outcome
        finally:
            cell.loading = False
            if cell.mailbox:
                mailboxes.make_ready(cell)
            else:
                mailboxes.forget(cell)
        report = ForkReport(to, address, position, seq)
        if steps:
            await self._redeliver(to, desc.handlers, steps, report)
        return report

    async def _redeliver(self, to: str, handlers: dict[str, Any], steps: list[SourceStep], report: ForkReport) -> None:
        plan = Reuse()
        loop = asyncio.get_running_loop()
        for source in steps:
            info = handlers.get(source.handler)
            if info is None:
                plan.diverge(source.position, f"handler {source.handler!r} is gone from the current code")
                report.failed += 1
                continue
            message = msgspec.msgpack.decode(source.body, type=info.message_type)
            prepared = self.scheduler.prepare(to, message, source.sender)
            step = prepared.reuse = StepReuse(plan, source)
            waiter: asyncio.Future[Any] = loop.create_future()
            prepared.waiter = waiter
            self.mailboxes.admit(to)
            self.mailboxes.deliver(self.mailboxes.cell(to), prepared)
            try:
                await waiter
            except HandlerError:
                report.failed += 1
            step.finish()
            report.redelivered += 1
        report.reused, report.ran = plan.reused, plan.ran
        report.divergence, report.diverged_at = plan.divergence, plan.diverged_at


def _read(
    history: storage.Reads,
    codec: storage.Codec,
    desc: Any,
    key: str,
    address: str,
    at: int | None,
    replay_after: bool,
) -> tuple[int, int, Any, list[SourceStep]]:
    """The source's seq and state at ``at``, and (``replay_after``) its later completed steps."""
    info = history.actor(address)
    if info is None:
        raise ForkError(f"there is no {address} to fork: it has no history")
    if at is None:
        seq = info.last_seq
        last = next(iter(history.entries(address, seq)), None)
        position = last.position if last is not None else 0
    else:
        seq, position = history.seq_at(address, at), at
    loaded = load(history, desc, codec, address, key, until_seq=seq)
    steps = [source_step(s) for s in _after(history, info, seq, position)] if replay_after else []
    return seq, position, loaded.instance.state, steps


def _after(history: storage.Reads, info: storage.ActorInfo, seq: int, position: int) -> Iterator[list[storage.Entry]]:
    """The source's completed steps to deliver again: those none of whose events the state at ``position`` holds.

    A step whose message is at or before the position but whose events all
    come after it (the position falls between its message and its first
    event) is one of them; a step the position cuts through its events is not
    (the fork's state holds those events already).
    """
    start = seq
    window = 16
    while start > info.floor:  # back to the message of the step the position falls in
        start = max(info.floor, seq - window)
        head = itertools.takewhile(lambda e: e.seq <= seq, history.entries(info.address, start))
        if any(e.kind == EntryKind.MESSAGE for e in head):
            break
        window *= 4
    step: list[storage.Entry] = []
    for entry in history.entries(info.address, start):
        if entry.kind == EntryKind.MESSAGE:
            step = []
        step.append(entry)
        if entry.kind != EntryKind.REPLY or step[0].kind != EntryKind.MESSAGE:
            continue
        if entry.position > position and all(e.position > position for e in step if e.kind == EntryKind.EVENT):
            yield step
        step = []
