"""dbos: an agent run of 10 journaled steps, on DBOS and on Stele, against the same PostgreSQL server.

DBOS Transact (the ``dbos`` package, in the dev extra) journals a workflow's every step in
its system database; Stele journals every effect of a step. The same run on both: ten steps that
each call a tool returning at once (the benchmark measures the journaling, not the tool), many
runs at a time (``concurrency``), on one private server started for the run (the tests' fixture
code), each system on a database of its own. Target: Stele's runs/s at least 10 x DBOS's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import anyio

from runtime import Runtime
from tests import pgserver

from ._model import Chain, Chainer

Result = dict[str, Any]

STEPS = 10


def dbos_runs(url: str, runs: int, concurrency: int) -> Result:
    """Runs/s of a 10-step DBOS workflow, ``concurrency`` at a time (async workflows on one loop)."""
    from dbos import DBOS, DBOSConfig  # only the benchmark needs it

    logging.getLogger("dbos").setLevel(logging.WARNING)
    config: DBOSConfig = {"name": "stele-bench", "system_database_url": url, "log_level": "WARNING"}
    DBOS(config=config)

    @DBOS.step()
    async def tool(i: int) -> int:
        return i * 2

    @DBOS.workflow()
    async def agent_run(steps: int) -> int:
        total = 0
        for i in range(steps):
            total += await tool(i)
        return total

    async def main() -> float:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(runs):
            queue.put_nowait(n)

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                assert await agent_run(STEPS) == STEPS * (STEPS - 1)

        await agent_run(STEPS)  # warm: the first run creates what DBOS keeps per process
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started

    DBOS.launch()
    try:
        elapsed = asyncio.run(main())
    finally:
        DBOS.destroy()
    return {"runs": runs, "concurrency": concurrency, "runs_per_s": runs / elapsed, "seconds": elapsed}


async def stele_runs(url: str, runs: int, concurrency: int) -> Result:
    """Runs/s of the same run on Stele: an actor's step with 10 effects, ``concurrency`` actors at a time."""
    async with Runtime(url, actors=[Chainer]) as rt:
        await rt.ask("Chainer/warm", Chain(STEPS))
        per_actor = runs // concurrency

        async def client(a: int) -> None:
            for _ in range(per_actor):
                assert await rt.ask(f"Chainer/{a}", Chain(STEPS)) == STEPS * (STEPS - 1)

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for a in range(concurrency):
                tg.start_soon(client, a)
        elapsed = time.perf_counter() - started
        batches = rt.stats.batches
    done = per_actor * concurrency
    return {"runs": done, "concurrency": concurrency, "runs_per_s": done / elapsed, "seconds": elapsed,
            "commits": batches}  # fmt: skip


def run(workdir: Path, quick: bool = False) -> Result:
    """Start a private server; DBOS, then Stele, each on a new database of it."""
    runs = 500 if quick else 2000
    concurrency = 50
    with pgserver.server() as server:
        results: Result = {}
        url = server.database()
        try:
            results["dbos"] = dbos_runs(url, runs // 4, concurrency)  # a quarter: it is the slower one
        finally:
            server.drop(url)
        url = server.database()
        try:
            results["stele"] = anyio.run(stele_runs, url, runs, concurrency)
        finally:
            server.drop(url)
    results["ratio"] = results["stele"]["runs_per_s"] / results["dbos"]["runs_per_s"]
    return results
