"""Stream benchmarks: chunks journaled per second with 1,000 concurrent streams, and the
latency from a chunk's journal entry to an SSE client following the actor's stream.

Also a ``serve`` module: ``python -m runtime serve benchmarks._streams`` serves :class:`Streamer`.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import msgspec

from actors import Actor, handler
from runtime import Runtime
from runtime.interfaces._client import call
from runtime.interfaces._sse import follow

from ._model import fresh

ROOT = Path(__file__).parent.parent
Result = dict[str, Any]


class Speak(msgspec.Struct):
    """Stream ``tokens`` tokens, one every ``pace`` seconds (0: as fast as they come)."""

    tokens: int
    pace: float = 0.0


async def tokens(count: int, pace: float) -> AsyncIterator[str]:
    """A model's answer, token by token."""
    for i in range(count):
        if pace:
            await asyncio.sleep(pace)
        else:
            await asyncio.sleep(0)  # a token arrives off the network: other streams run meanwhile
        yield f"t{i} "


class Streamer(Actor):
    """Streams an answer and replies with its length."""

    @handler
    async def speak(self, msg: Speak) -> int:
        """Stream the tokens; reply with the answer's length."""
        stream = self.ctx.stream(tokens, msg.tokens, msg.pace)
        async for _ in stream:
            pass
        return len(stream.result)


async def chunks(workdir: Path, streams: int = 1000, per_stream: int = 100) -> Result:
    """``streams`` actors stream ``per_stream`` chunks each, all at once."""
    db = fresh(str(workdir / "streams.db"))
    async with Runtime(db, actors=[Streamer]) as rt:
        for a in range(streams):  # activated and registered first: the figure is the streams'
            await rt.ask(f"Streamer/{a}", Speak(1))
        before_units, before_batches = rt.stats.units, rt.stats.batches

        async def one(a: int) -> None:
            await rt.ask(f"Streamer/{a}", Speak(per_stream))

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for a in range(streams):
                tg.start_soon(one, a)
        elapsed = time.perf_counter() - started
        units, batches = rt.stats.units - before_units, rt.stats.batches - before_batches
    total = streams * per_stream
    return {
        "streams": streams,
        "chunks": total,
        "chunks_per_s": total / elapsed,
        "commits": batches,
        "units": units,
        "chunks_per_unit": total / max(units, 1),
    }


def reader_latency(workdir: Path, count: int = 2000, pace: float = 0.005) -> Result:
    """A server streams ``count`` tokens (one every ``pace`` s); an SSE client follows: entry time to receipt."""
    db = fresh(str(workdir / "stream-latency.db"))
    command = ["serve", "benchmarks._streams", "--db", db, "--http", "127.0.0.1:0", "--no-replicate"]
    server = subprocess.Popen(
        [sys.executable, "-m", "runtime", *command],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    latencies: list[float] = []
    try:
        assert server.stdout is not None
        base = server.stdout.readline().split()[-1]
        url = f"{base}/actors/Streamer/s/stream"
        done = threading.Event()

        def read() -> None:
            for item in follow(lambda: url, reconnect_for=10):
                if item["kind"] == "chunk":
                    latencies.append(time.time() - item["at"])
                elif item["kind"] == "end":
                    done.set()
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        time.sleep(0.5)  # the reader follows before the first token
        body = msgspec.json.encode(Speak(count, pace))
        status, _ = call(f"{base}/actors/Streamer/s/speak", token=None, body=body, timeout=120)
        assert status == 200, status
        assert done.wait(60), "the reader did not get the end"
        reader.join(10)
    finally:
        server.terminate()
        server.wait(60)
        if server.stdout is not None:
            server.stdout.close()
    latencies.sort()
    return {
        "chunks": len(latencies),
        "pace_ms": pace * 1e3,
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
    }
