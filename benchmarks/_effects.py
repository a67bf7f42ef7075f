"""Effect benchmark: 100 concurrent actors, each running chains of 10 journaled effects."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio

from runtime import Runtime

from ._model import Chain, Chainer, fresh


async def effects(workdir: Path, actors: int = 100, chains: int = 10, length: int = 10) -> dict[str, Any]:
    db = fresh(str(workdir / "effects.db"))
    async with Runtime(db, actors=[Chainer]) as rt:

        async def client(a: int) -> None:
            for _ in range(chains):
                assert await rt.ask(f"Chainer/{a}", Chain(length)) == length * (length - 1)

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for a in range(actors):
                tg.start_soon(client, a)
        elapsed = time.perf_counter() - started
        commits = rt.stats.batches
    total = actors * chains * length
    return {"effects": total, "effects_per_s": total / elapsed, "commits": commits}
