"""Checks a journal written by ``Recorder`` actors against what clients saw.

Used by every crash test (kill -9, power loss, the Jepsen-style driver): each
message carries a unique id, each step runs one traced effect (``journal_effect``
appends ``key token`` to a trace file outside the journal) and emits one
``Recorded`` event.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import anyio
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
    # Poison-message handling has its own tests; here every message must be processed.
    async with Runtime(db, actors=[Recorder], max_attempts=1000) as rt:
        watch = Drain(db)
        while left := watch.left():
            await anyio.sleep(0.005 if left < 100 else 0.05)
        return {address: await rt.ask(address, Fetch()) for address in actors}


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
        with Journal.open(self.db) as journal:
            left = len(journal.pending())
        if self._fewest is None or left < self._fewest:
            self._fewest, self._since = left, time.monotonic()
        assert not left or time.monotonic() - self._since < STALL_S, f"recovery stalled with {left} pending"
        return left
