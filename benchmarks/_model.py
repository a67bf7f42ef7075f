"""The actor the benchmarks drive, and a synthesizer of large journals."""

from __future__ import annotations

import os
import time
import zlib
from typing import Any

import apsw
import msgspec

from actors import Actor, apply, handler
from runtime._records import MessageRecord, ReplyRecord
from storage import Store


class Inc(msgspec.Struct):
    n: int


class Incremented(msgspec.Struct):
    n: int


class Total(msgspec.Struct):
    pass


class Add(msgspec.Struct):
    """Add ``n`` one by one: one event each (the steps :func:`synthesize` writes)."""

    n: int


class Progress:
    """Side channel for the harness: how many steps ran (not journaled state)."""

    steps = 0
    target = -1
    reached: Any = None  # an asyncio.Event while a benchmark waits


class Counter(Actor):
    class State(msgspec.Struct):
        total: int = 0
        count: int = 0

    state: State
    snapshot_every = 0

    @handler
    async def inc(self, msg: Inc) -> int:
        self.emit(Incremented(msg.n))
        Progress.steps += 1
        if Progress.steps == Progress.target and Progress.reached is not None:
            Progress.reached.set()
        return self.state.total

    @handler
    async def total(self, msg: Total) -> int:
        return self.state.total

    @handler
    async def add(self, msg: Add) -> None:
        for _ in range(msg.n):
            self.emit(Incremented(1))

    @apply
    def _incremented(self, ev: Incremented) -> None:
        self.state.total += ev.n
        self.state.count += 1


_encode = msgspec.msgpack.Encoder().encode


def fresh(path: str) -> str:
    """``path`` with any journal (and its WAL, shared memory, owner lock) removed."""
    for suffix in ("", "-wal", "-shm", "-owner"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    return path


def synthesize(path: str, actors: int, events_per_actor: int, *, snapshot_every: int = 0, per_step: int = 10) -> None:
    """Write a journal as the runtime would: steps of ``per_step`` events (plus message and reply).

    Each step is what ``Counter.add`` journals, so the current code replays the
    journal without a divergence (the restore drill replays it).
    """
    fresh(path)
    Store.open(path, notify=lambda results: None).close()  # create and migrate
    conn = apsw.Connection(path)
    conn.execute("PRAGMA journal_mode = WAL").fetchall()
    conn.execute("PRAGMA synchronous = OFF")
    step = 0
    now = time.time()
    event = _encode(Incremented(1))
    reply = _encode(ReplyRecord(True, msgspec.Raw(_encode(None))))
    with conn:
        rows: list[tuple[Any, ...]] = []
        snaps: list[tuple[Any, ...]] = []
        registry: list[tuple[Any, ...]] = []
        for a in range(actors):
            address, ident = f"Counter/{a}", a + 1
            seq = 0
            emitted = 0
            while emitted < events_per_actor:
                step += 1
                count = min(per_step, events_per_actor - emitted)
                body = msgspec.Raw(_encode(Add(count)))
                seq += 1
                rows.append((ident, seq, step, "message", "Add", _encode(MessageRecord("add", body, step, now)), now))
                for _ in range(count):
                    seq += 1
                    emitted += 1
                    rows.append((ident, seq, step, "event", "Incremented", event, now))
                    if snapshot_every and emitted % snapshot_every == 0:
                        state = Counter.State(total=emitted, count=emitted)
                        snaps.append((ident, seq, "Counter.State", _encode(state), now))
                seq += 1
                rows.append((ident, seq, step, "reply", "int", reply, now))
            registry.append((ident, address, "Counter", now))
            if len(rows) > 200_000:
                _flush(conn, rows, snaps, registry)
        _flush(conn, rows, snaps, registry)
        conn.execute("UPDATE meta SET value = ? WHERE key = 'step_hwm'", (step,))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    conn.close()


def _flush(
    conn: apsw.Connection, rows: list[tuple[Any, ...]], snaps: list[tuple[Any, ...]], registry: list[tuple[Any, ...]]
) -> None:
    # With their checksums, as the writer stores them: rebuilding then pays for checking them.
    conn.executemany(
        "INSERT INTO journal(actor, seq, step, kind, type, data, at, crc) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(*row, zlib.crc32(row[5])) for row in rows],
    )
    conn.executemany(
        "INSERT INTO snapshots(actor, seq, type, data, at, crc) VALUES (?, ?, ?, ?, ?, ?)",
        [(*snap, zlib.crc32(snap[3])) for snap in snaps],
    )
    conn.executemany("INSERT INTO actors(id, address, type, updated) VALUES (?, ?, ?, ?)", registry)
    rows.clear()
    snaps.clear()
    registry.clear()


class Arm(msgspec.Struct):
    count: int
    spread: float


class Tick(msgspec.Struct):
    due: float


class Ticked(msgspec.Struct):
    late: float


class Timed:
    """Side channel for the timer benchmark: fired count and early firings."""

    fired = 0
    early = 0
    target = -1
    reached: Any = None


class Alarm(Actor):
    """Schedules timers on request; each fired timer is one step with one event."""

    class State(msgspec.Struct):
        fired: int = 0

    state: State

    @handler
    async def arm(self, msg: Arm) -> int:
        now = self.ctx.now()
        for i in range(msg.count):
            delay = msg.spread * i / max(msg.count - 1, 1)
            self.ctx.schedule(delay, self.address, Tick(now + delay))
        return msg.count

    @handler
    async def tick(self, msg: Tick) -> None:
        if self.ctx.now() < msg.due:
            Timed.early += 1
        self.emit(Ticked(self.ctx.now() - msg.due))
        Timed.fired += 1
        if Timed.fired == Timed.target and Timed.reached is not None:
            Timed.reached.set()

    @apply
    def _ticked(self, ev: Ticked) -> None:
        self.state.fired += 1


class Chain(msgspec.Struct):
    length: int


async def tool(i: int) -> int:
    """An async effect that returns at once: the benchmark measures journaling, not the tool."""
    return i * 2


class Chainer(Actor):
    """Runs a chain of effects per message."""

    @handler
    async def chain(self, msg: Chain) -> int:
        total = 0
        for i in range(msg.length):
            total += await self.ctx.effect(tool, i)
        return total
