"""A load generator for the nodes benchmark: ``python -m benchmarks._nodes_load BASE SECONDS CONCURRENCY ACTORS``.

``CONCURRENCY`` keep-alive HTTP/1.1 connections to one node, each sending asks
(``Counter/N inc``) to random actors back to back for ``SECONDS``; prints
``{"calls": ..., "errors": ...}``. A process of its own, so that the load costs
the nodes nothing but the network hop.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from urllib.parse import urlsplit


async def worker(host: str, port: int, deadline: float, actors: int, counts: dict[str, int], seed: int) -> None:
    rng = random.Random(seed)
    reader, writer = await asyncio.open_connection(host, port)
    body = b'{"n": 1}'
    try:
        while time.monotonic() < deadline:
            path = f"/actors/Counter/{rng.randrange(actors)}/inc"
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode() + body
            )
            await writer.drain()
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
            counts["calls" if status == 200 else "errors"] += 1
    finally:
        writer.close()


async def main(base: str, seconds: float, concurrency: int, actors: int) -> None:
    parts = urlsplit(base)
    counts = {"calls": 0, "errors": 0}
    deadline = time.monotonic() + seconds
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    await asyncio.gather(*(worker(host, port, deadline, actors, counts, i) for i in range(concurrency)))
    print(json.dumps(counts))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
