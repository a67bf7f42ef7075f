"""Payloads stored once: the long-conversation workload with payload storage on and off (bytes in
the journal, bytes Litestream uploads to a moto S3 server through a counting proxy on
127.0.0.1), and tells and asks of small payloads with it on and off, in turn."""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import apsw

from runtime import Runtime
from storage import DEFAULT_PAYLOAD_THRESHOLD, Journal
from tests.conversation import Chat, Say, question
from tests.s3server import CREDENTIALS, S3Server

from ._model import fresh

Result = dict[str, Any]


class CountingProxy:
    """A TCP relay on 127.0.0.1 to ``port`` that counts the bytes its clients send (uploads)."""

    def __init__(self, port: int) -> None:
        self._target = port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.sent = 0
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, counted: bool) -> None:
        try:
            while data := source.recv(1 << 16):
                if counted:
                    with self._lock:
                        self.sent += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self._server.close()


def used_bytes(path: str) -> int:
    # APSW, not the stdlib's driver: a second SQLite library in this process would drop the
    # runtime's POSIX locks on the file when it closes it.
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        pages = conn.execute("PRAGMA page_count").get
        free = conn.execute("PRAGMA freelist_count").get
        size = conn.execute("PRAGMA page_size").get
    finally:
        conn.close()
    return int((pages - free) * size)


async def conversation(path: str, calls: int, threshold: int | None, replicate: str | None) -> Result:
    unique = 0
    started = time.perf_counter()
    async with Runtime(path, actors=[Chat], payload_threshold=threshold, replicate=replicate) as rt:
        for i in range(calls):
            text = question(i)
            answer = await rt.ask("Chat/long", Say(text))
            unique += len(text.encode()) + len(answer.encode())
    elapsed = time.perf_counter() - started
    with Journal.open(path) as journal:
        stats = journal.payload_stats()
    return {
        "calls": calls,
        "unique_bytes": unique,
        "used_bytes": used_bytes(path),
        "file_bytes": os.path.getsize(path),
        "payload_chunks": stats.chunks,
        "payload_stored_bytes": stats.stored_bytes,
        "payload_content_bytes": stats.content_bytes,
        "calls_per_s": calls / elapsed,
    }


def long_conversation(workdir: Path, calls: int) -> Result:
    for key, value in CREDENTIALS.items():
        os.environ.setdefault(key, value)
    server = S3Server()
    out: Result = {}
    try:
        for name, threshold in (("on", DEFAULT_PAYLOAD_THRESHOLD), ("off", None)):
            proxy = CountingProxy(server.port)
            try:
                endpoint = f"http://127.0.0.1:{proxy.port}"
                url = f"s3://{server.bucket()}/journal?endpoint={endpoint}&region=us-east-1&forcePathStyle=true"
                db = fresh(str(workdir / f"conversation-{name}.db"))
                figures = anyio.run(conversation, db, calls, threshold, url)
                figures["uploaded_bytes"] = proxy.sent  # after close: Litestream's final sync is in
            finally:
                proxy.close()
            out[name] = figures
    finally:
        server.stop()
    return out


Scenario = Callable[..., Awaitable[Result]]


def small_payloads(workdir: Path, tells: Scenario, asks: Scenario) -> Result:
    """Tells and sequential asks of small payloads, payload storage on and off in turn (the machine drifts)."""
    out: Result = {}
    for threshold in (DEFAULT_PAYLOAD_THRESHOLD, None, DEFAULT_PAYLOAD_THRESHOLD, None):
        key = "on" if threshold is not None else "off"
        told = anyio.run(functools.partial(tells, workdir, actors=1000, per_actor=20, payload_threshold=threshold))
        asked = anyio.run(functools.partial(asks, workdir, count=3000, payload_threshold=threshold))
        best = out.setdefault(key, {"tells_per_s": 0.0, "asks_per_s": 0.0})
        best["tells_per_s"] = max(best["tells_per_s"], told["messages_per_s"])
        if asked["asks_per_s"] > best["asks_per_s"]:
            best.update(asks_per_s=asked["asks_per_s"], ask_p50_us=asked["p50_us"], ask_p99_us=asked["p99_us"])
    return out


def run(workdir: Path, quick: bool, tells: Scenario, asks: Scenario) -> Result:
    return {
        "conversation": long_conversation(workdir, 100 if quick else 200),
        "small": small_payloads(workdir, tells, asks),
    }
