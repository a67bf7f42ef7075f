"""Benchmark scenarios that need a process of their own (memory, start-up)."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import anyio
import apsw

from runtime import Runtime

from ._model import Counter, Inc, Progress, Total, fresh


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def many_actors(workdir: str, actors: int) -> dict[str, object]:
    """(e): ``actors`` distinct actors, one message each, ``max_active=10,000``."""
    path = fresh(str(Path(workdir) / "rss.db"))
    curve, sqlite, cells = [], [], []
    async with Runtime(path, actors=[Counter], max_active=10_000) as rt:
        senders = 500
        quarter = actors // 4
        per = quarter // senders
        started = time.perf_counter()
        Progress.steps = 0
        for q in range(4):
            async with anyio.create_task_group() as tg:
                for s in range(senders):
                    tg.start_soon(send_range, rt, q * quarter + s * per, per)
            # Tells return once durable; measure once this quarter is processed,
            # so the curve shows resident actors, not the backlog of accepted mail.
            while Progress.steps < (q + 1) * senders * per:
                await anyio.sleep(0.01)
            curve.append(round(rss_mb()))
            sqlite.append(round(apsw.memory_used() / 2**20))
            cells.append(rt.statistics().addresses)
        # Asks queue behind what is pending: one per quarter shows all were processed.
        for a in range(0, actors, quarter):
            total = await rt.ask(f"Counter/{a}", Total())
            assert total == 1, (a, total)
        elapsed = time.perf_counter() - started
        active = rt.statistics().active_actors
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "actors": actors,
        "peak_rss_mb": peak,
        "rss_curve_mb": curve,
        "sqlite_memory_mb": sqlite,
        "cells": cells,
        "active_at_end": active,
        "seconds": elapsed,
    }


async def send_range(rt: Runtime, first: int, count: int) -> None:
    for a in range(first, first + count):
        await rt.tell(f"Counter/{a}", Inc(1))


async def first_reply(path: str, actors: int) -> dict[str, object]:
    """(f): from opening the runtime to the first reply, on an existing journal."""
    t0 = time.perf_counter()
    async with Runtime(path, actors=[Counter]) as rt:
        total = await rt.ask(f"Counter/{actors // 2}", Total())
        elapsed = time.perf_counter() - t0
    assert total > 0
    return {"first_reply_s": elapsed}


def main() -> None:
    kind, workdir, *args = sys.argv[1:]
    if kind == "rss":
        result = anyio.run(many_actors, workdir, int(args[0]))
    elif kind == "startup":
        result = anyio.run(first_reply, args[0], int(args[1]))
    else:
        raise SystemExit(f"unknown benchmark child {kind!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
