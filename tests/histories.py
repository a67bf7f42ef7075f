"""Checks a journal written by ``Recorder`` actors against what clients saw.

Used by every crash test (kill -9, power loss, the Jepsen-style driver): each
message carries a unique id, each step runs one traced effect (``journal_effect``
appends ``key token`` to a trace file outside the journal) and emits one
``Recorded`` event. Also what those tests share to watch a recovery and to
leave no child process behind.
"""

from __future__ import annotations

import contextlib
import selectors
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread
import apsw
import msgspec

from runtime import Runtime
from storage import Journal

from .models import Fetch, Recorded, Recorder

STALL_S = 30.0
"""Recovery that consumes nothing for this long has stalled: the test fails."""


@dataclass
class Audit:
    """What one journal holds, checked for the properties every crash must keep."""

    processed: Counter[int] = field(default_factory=Counter)
    """Message id -> how many steps consumed it (must never exceed 1)."""
    events: dict[str, list[int]] = field(default_factory=dict)
    """Actor -> the ids its journaled events record, in order."""
    effects: int = 0

    def lost(self, acked: set[int]) -> list[int]:
        """Acknowledged ids no step consumed."""
        return sorted(i for i in acked if self.processed[i] == 0)

    def duplicated(self) -> list[int]:
        """Ids consumed more than once."""
        return sorted(i for i, n in self.processed.items() if n > 1)


def integrity(db: str) -> str:
    """``PRAGMA integrity_check`` through the default VFS (runs WAL recovery first)."""
    conn = apsw.Connection(db)
    try:
        return "; ".join(str(row[0]) for row in conn.execute("PRAGMA integrity_check"))
    finally:
        conn.close()


def audit(db: str, trace: str | None = None, *, drained: bool = True) -> Audit:
    """Read the journal; check sequences are contiguous and no effect ran twice.

    ``drained`` asks that no message be left pending (after a recovery run).
    With ``trace``, each journaled effect result must be the *last* execution
    traced for its key: a result journaled and then executed again is a G3 breach.
    """
    decoder = msgspec.msgpack.Decoder(Recorded)
    result = Audit()
    journaled: dict[str, str] = {}
    with Journal.open(db) as journal:
        if drained:
            assert journal.pending() == [], "messages were left pending after recovery"
        for actor in journal.actors():
            entries = list(journal.entries(actor.address))
            seqs = [e.seq for e in entries]
            assert seqs == list(range(1, len(entries) + 1)), f"{actor.address}: sequence has gaps: {seqs[:20]}"
            ids = [decoder.decode(e.data).id for e in entries if e.kind == "event"]
            result.events[actor.address] = ids
            result.processed.update(ids)
            for e in entries:
                if e.kind == "effect":
                    key = f"{actor.address}/{e.step}/0"
                    assert key not in journaled, f"two journaled results for effect {key}"
                    journaled[key] = e.decoded()["result"]
    result.effects = len(journaled)
    if trace is not None:
        last_run: dict[str, str] = {}
        if Path(trace).exists():
            for line in Path(trace).read_text().splitlines():
                key, token = line.split(" ")
                last_run[key] = token
        for key, token in journaled.items():
            assert last_run.get(key) == token, f"effect {key} ran again after its result was journaled"
    return result


async def recover(db: str, actors: list[str]) -> dict[str, list[int]]:
    """Open ``db`` normally, wait until recovery has consumed every pending message,
    and return what each of ``actors`` serves as its list of consumed ids."""
    async with Runtime(db, actors=[Recorder]) as rt:
        watch = Drain(db)
        while left := await anyio.to_thread.run_sync(watch.left):  # the loop keeps serving meanwhile
            await anyio.sleep(0.005 if left < 100 else 0.05)
        return {address: await rt.ask(address, Fetch()) for address in actors}


def pending_count(db: str) -> int:
    """How many messages the inbox of ``db`` holds (read-only, beside a runtime writing it)."""
    # A count, not Journal.pending(): that reads every payload, and a long run
    # leaves tens of thousands of them, read again at every poll. Through APSW,
    # the runtime's SQLite: a second SQLite library in the process (the stdlib
    # one) would release the runtime's locks on the file when it closes its own.
    conn = apsw.Connection(db, flags=apsw.SQLITE_OPEN_READONLY)
    # A process recovering the file holds its locks for a moment (WAL recovery,
    # a checkpoint): wait for them as the runtime's own readers do.
    conn.set_busy_timeout(10_000)
    try:
        for (count,) in conn.execute("SELECT count(*) FROM inbox"):
            return int(count)
        raise AssertionError("a count returned no row")
    finally:
        conn.close()


class Drain:
    """Watches recovery consume the inbox of ``db`` (served by this process or another).

    A long run leaves a long backlog: it fails only when recovery stops making
    progress for ``STALL_S``, not after a fixed time.
    """

    def __init__(self, db: str) -> None:
        self.db = db
        self._fewest: int | None = None
        self._since = time.monotonic()

    def left(self) -> int:
        """Messages still pending; raises AssertionError once recovery has stalled."""
        left = pending_count(self.db)
        if self._fewest is None or left < self._fewest:
            self._fewest, self._since = left, time.monotonic()
        assert not left or time.monotonic() - self._since < STALL_S, f"recovery stalled with {left} pending"
        return left


def wait_recovered(proc: subprocess.Popen[str], db: str) -> str:
    """Wait for ``proc``, recovering ``db``, to exit; return its output.

    It fails on a stall (the inbox not shrinking for ``STALL_S``), never after
    a fixed total time: the backlog a long run leaves takes as long as it takes.
    """
    watch = Drain(db)
    while proc.poll() is None and watch.left():
        time.sleep(0.2)
    # Drained: what is left (reading the state, closing) does not grow with the backlog.
    out, _ = proc.communicate(timeout=STALL_S)
    return out


def first_line(proc: subprocess.Popen[str], timeout: float = STALL_S) -> str:
    """The first line ``proc`` prints, or AssertionError if none comes within ``timeout``."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        assert selector.select(timeout), f"the child printed nothing in {timeout} s"
    return proc.stdout.readline()


def reap(proc: subprocess.Popen[str]) -> None:
    """Kill ``proc`` if it still runs, wait for it and close its pipes (idempotent).

    A child left running or a pipe left open is reported when garbage
    collected, in whichever test runs then (filterwarnings=error fails it).
    """
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):  # a write still buffered for a child that died
                pipe.close()


@contextlib.contextmanager
def reaped(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """Use ``proc``, then :func:`reap` it on every path."""
    try:
        yield proc
    finally:
        reap(proc)
