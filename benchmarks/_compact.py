"""Compaction of a 1,000,000-event journal, and what the other actors' asks see meanwhile.

The journal is synthesized as the runtime writes it (1,000 actors of 1,000
events, steps of 10 events, a snapshot every 50) for a type that keeps one
snapshot: compaction removes almost all of it. Sequential asks to an actor of
another type run all along; their latency is compared with the same asks
without a compaction (the writer must not stall). Then the file's size is
compared before and after (the pages given back by incremental vacuum).

:func:`run_large`: agents whose prompts, answers, events and snapshots are
large values stored as payload chunks, written through the runtime, compacted;
the file's bytes before and after (the chunks only removed history named are
reclaimed and their pages given back) and the compaction's time.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import anyio

from actors import Retention
from runtime import Runtime
from tests.test_compaction_payloads import Prompt, Transcript, prompt

from ._model import Counter, Inc, fresh, synthesize

Result = dict[str, Any]


class Kept(Counter):
    """The synthesized actors' type, keeping its newest snapshot and what follows."""

    name = "Counter"
    snapshot_every = 50
    retention = Retention(snapshots=1)


class Other(Counter):
    """An actor of a type without retention, asked all along."""


async def _asks(rt: Runtime, until: anyio.Event | None, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        if until is not None and until.is_set():
            break
        t0 = time.perf_counter()
        await rt.ask("Other/0", Inc(1))
        latencies.append(time.perf_counter() - t0)
    return latencies


def _summary(latencies: list[float]) -> Result:
    ordered = sorted(latencies)
    return {
        "asks": len(ordered),
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[int(len(ordered) * 0.99)] * 1000,
        "max_ms": ordered[-1] * 1000,
    }


async def _compact(db: str, batch: int) -> Result:
    async with Runtime(db, actors=[Kept, Other]) as rt:
        baseline = _summary(await _asks(rt, None, 2000))
        done = anyio.Event()
        during: list[float] = []
        report: Any = None

        async def compact() -> None:
            nonlocal report
            report = await rt.compact(batch=batch)
            done.set()

        async def ask() -> None:
            during.extend(await _asks(rt, done, 10**9))

        async with anyio.create_task_group() as tg:
            tg.start_soon(compact)
            tg.start_soon(ask)
    return {
        "batch": batch,
        "seconds": report.seconds,
        "entries_removed": report.entries,
        "snapshots_removed": report.snapshots,
        "commits": report.batches,
        "bytes_before": report.bytes_before,
        "bytes_after": report.bytes_after,
        "asks_without": baseline,
        "asks_during": _summary(during),
    }


def run(workdir: Path, events: int = 1_000_000, batch: int = 1000) -> Result:
    db = fresh(str(workdir / "compact.db"))
    actors = 1000
    synthesize(db, actors, events // actors, snapshot_every=50)
    file_before = os.path.getsize(db)
    result = anyio.run(_compact, db, batch)
    result["events"] = events
    result["file_mb_before"] = file_before / 1e6
    result["file_mb_after"] = os.path.getsize(db) / 1e6  # the runtime closed: the WAL is checkpointed
    return result


async def _large(db: str, agents: int, turns: int) -> Result:
    async with Runtime(db, actors=[Transcript]) as rt:
        for turn in range(turns):
            async with anyio.create_task_group() as tg:  # the agents' turns side by side, each in order
                for agent in range(agents):
                    tg.start_soon(rt.ask, f"Transcript/{agent}", Prompt(prompt(turn + 1000 * agent)))
        before = await anyio.to_thread.run_sync(rt.store.payload_stats)
        report = await rt.compact()
        after = await anyio.to_thread.run_sync(rt.store.payload_stats)
    return {
        "agents": agents,
        "turns": turns,
        "seconds": report.seconds,
        "entries_removed": report.entries,
        "snapshots_removed": report.snapshots,
        "chunks_before": before.chunks,
        "chunks_after": after.chunks,
        "chunk_bytes_before": before.stored_bytes,
        "chunk_bytes_after": after.stored_bytes,
        "commits": report.batches,
        "bytes_before": report.bytes_before,
        "bytes_after": report.bytes_after,
    }


def run_large(workdir: Path, agents: int = 20, turns: int = 100) -> Result:
    """Compaction of agents with large values (see the module's docstring)."""
    db = fresh(str(workdir / "compact-large.db"))
    result = anyio.run(_large, db, agents, turns)
    result["file_mb_after"] = os.path.getsize(db) / 1e6  # the runtime closed: the WAL is checkpointed
    return result
