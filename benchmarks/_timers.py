"""Timer benchmark: 100,000 durable timers scheduled, then fired, with a virtual clock
(so the figure is the runtime's delivery and processing rate, not a wait)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import anyio

from runtime import Runtime, VirtualClock

from ._model import Alarm, Arm, Timed, fresh


async def timers(workdir: Path, actors: int = 10_000, per_actor: int = 10) -> dict[str, Any]:
    db = fresh(str(workdir / "timers.db"))
    clock = VirtualClock()
    total = actors * per_actor
    Timed.fired, Timed.early, Timed.target = 0, 0, total
    Timed.reached = asyncio.Event()
    async with Runtime(db, actors=[Alarm], clock=clock) as rt:
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for a in range(actors):
                tg.start_soon(rt.ask, f"Alarm/{a}", Arm(per_actor, 60.0))
        scheduled = time.perf_counter() - started
        started = time.perf_counter()
        clock.advance(61.0)  # every timer is now due
        await Timed.reached.wait()
        fired = time.perf_counter() - started
    Timed.reached = None
    return {
        "timers": total,
        "scheduled_per_s": total / scheduled,
        "fired_per_s": total / fired,
        "early": Timed.early,
    }
