"""HTTP benchmarks: asks over loopback from 50 concurrent keep-alive clients,
and the inspection paths (history page, state --at) on a 1,000,000-event actor."""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from actors._actor import describe
from runtime import Registry, load
from storage import Journal

from ._model import Counter, fresh, synthesize

ROOT = Path(__file__).parent.parent
Result = dict[str, Any]


async def _client(host: str, port: int, path: str, body: bytes, count: int, latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    try:
        for _ in range(count):
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head.decode(errors="replace"))
            latencies.append(time.perf_counter() - t0)
    finally:
        writer.close()


async def _load(host: str, port: int, clients: int, per_client: int) -> list[float]:
    latencies: list[float] = []
    await asyncio.gather(
        *(_client(host, port, f"/actors/Counter/c{i}/inc", b'{"n": 1}', per_client, latencies) for i in range(clients))
    )
    return latencies


def http_asks(workdir: Path, clients: int = 50, per_client: int = 200) -> Result:
    db = fresh(str(workdir / "http.db"))
    command = ["serve", "benchmarks._model", "--db", db, "--http", "127.0.0.1:0", "--no-replicate"]
    server = subprocess.Popen(
        [sys.executable, "-m", "runtime", *command],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split()[-1]
        host, port = url.removeprefix("http://").split(":")
        asyncio.run(_load(host, int(port), clients, 20))  # warm up: connections, actors
        started = time.perf_counter()
        latencies = asyncio.run(_load(host, int(port), clients, per_client))
        elapsed = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(60)
        if server.stdout is not None:
            server.stdout.close()
    latencies.sort()
    return {
        "asks_per_s": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
        "clients": clients,
    }


def inspection(workdir: Path, events: int = 1_000_000) -> Result:
    """history (a page from the middle) and state --at on one actor with 1,000,000 events."""
    db = fresh(str(workdir / "big-actor.db"))
    synthesize(db, 1, events, snapshot_every=1000, per_step=10)
    registry = Registry([Counter])
    desc = describe(Counter)
    with Journal.open(db) as journal:
        last = journal.actor("Counter/0")
        assert last is not None
        middle = last.last_seq // 2
        history = []
        for _ in range(5):
            t0 = time.perf_counter()
            page = []
            for entry in journal.entries("Counter/0", middle):
                page.append((entry, entry.decoded()))
                if len(page) == 100:
                    break
            history.append(time.perf_counter() - t0)
        position = page[50][0].position
        state = []
        for _ in range(5):
            t0 = time.perf_counter()
            seq = journal.seq_at("Counter/0", position)
            loaded = load(journal, desc, registry.codec, "Counter/0", "0", until_seq=seq)
            state.append(time.perf_counter() - t0)
        assert loaded.instance.state.count > 0
    return {
        "events": events,
        "journal_mb": os.path.getsize(db) / 1e6,
        "history_page_ms": statistics.median(history) * 1e3,
        "state_at_ms": statistics.median(state) * 1e3,
    }
