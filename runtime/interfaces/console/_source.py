"""What the console shows: a journal file, read-only, and, under ``serve``, the runtime that writes it.

The console reads every page through read-only :class:`storage.Journal`
connections of its own (a small pool, used from worker threads), so a page
never waits on the runtime and the runtime never waits on a page. Operating
(resolve, retry, drop, resume, send) needs a runtime: a console over a file
(``python -m runtime ui``) is read-only.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

import anyio
import anyio.to_thread
import msgspec
from starlette.requests import Request

import storage

from ..._registry import Registry
from ..._runtime import Runtime
from .._http_outcomes import Answer

T = TypeVar("T")

POOL = 4
"""Read-only connections kept open between pages (each keeps its page cache warm)."""
SAMPLE_EVERY_S = 1.0
HISTORY = 600
"""Samples kept: ten minutes at one a second."""


class Operator(Protocol):
    """Sends a message exactly as ``POST /actors/{type}/{key}/{handler}`` does (serve's HTTP app)."""

    async def deliver(self, request: Request, address: str, handler: str, body: bytes, *, ask: bool) -> Answer:
        """Validate ``body`` as the handler's message and tell or ask it; the HTTP answer.
        (``request``: its client going away stops the wait, as for the HTTP API.)"""
        ...


class Sample(msgspec.Struct, frozen=True, array_like=True):
    """One second of a live runtime: replication lag, the WAL, backpressure."""

    at: float
    commits_at_risk: int
    oldest_at_risk_s: float
    wal_bytes: int
    pending: int
    mailbox_depth: int


class Source:
    """A journal the console shows; live (able to operate) when ``runtime`` serves it."""

    def __init__(
        self,
        path: str,
        *,
        registry: Registry | None = None,
        runtime: Runtime | None = None,
        operator: Operator | None = None,
        origin: str | None = None,
    ) -> None:
        postgres = storage.is_postgres(path)
        self.path = path if postgres else os.path.abspath(path)
        """Where the journal is: a file's absolute path, or a database's URL (with its password)."""
        self.shown = storage.redact(path) if postgres else self.path
        """``path`` as pages may show it (never a password)."""
        self.registry = registry if registry is not None else (runtime.registry if runtime is not None else None)
        self.runtime = runtime
        self.operator = operator
        self.origin = origin
        """Where the file came from, when it is a restored replica."""
        self.history: collections.deque[Sample] = collections.deque(maxlen=HISTORY)
        self._pool: list[storage.Journal] = []
        self._lock = threading.Lock()
        self._sampling = False
        self.closing = False

    @property
    def live(self) -> bool:
        """Whether a runtime serves the journal (and the console may operate)."""
        return self.runtime is not None

    # -- reading ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def journal(self) -> Iterator[storage.Journal]:
        """A read-only connection from the pool (in the calling thread)."""
        with self._lock:
            journal = self._pool.pop() if self._pool else None
        if journal is None:
            journal = storage.Journal.open(self.path)
        healthy = False
        try:
            yield journal
            healthy = True
        finally:
            keep = False
            if healthy and not self.closing:
                with self._lock:
                    if len(self._pool) < POOL:
                        self._pool.append(journal)
                        keep = True
            if not keep:
                journal.close()

    async def read(self, fn: Callable[[storage.Journal], T]) -> T:
        """``fn(journal)`` in a worker thread."""

        def run() -> T:
            with self.journal() as journal:
                return fn(journal)

        return await anyio.to_thread.run_sync(run)

    def file_sizes(self) -> dict[str, int]:
        """The journal's and its WAL's sizes in bytes (a database: its tables', and no WAL)."""
        if storage.is_postgres(self.path):
            with self.journal() as journal:
                stored, _ = journal.stored_bytes()
            return {"journal_bytes": stored, "wal_bytes": 0}

        def size(path: str) -> int:
            try:
                return os.path.getsize(path)
            except OSError:
                return 0

        return {"journal_bytes": size(self.path), "wal_bytes": size(self.path + "-wal")}

    # -- a live runtime -------------------------------------------------------------------------

    def statistics(self) -> Any:
        """``rt.statistics()`` of the serving runtime, or None."""
        return self.runtime.statistics() if self.runtime is not None else None

    def start_sampling(self) -> None:
        """Sample the runtime once a second for the health page's charts (once; live only)."""
        if self.runtime is None or self._sampling:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # not on the loop yet: the first request starts it
        self._sampling = True
        self.runtime.spawn(self._sample)

    async def _sample(self) -> None:
        rt = self.runtime
        assert rt is not None
        while not self.closing:
            figures = rt.statistics()
            replication = figures.replication
            if replication is not None:
                wal = replication.wal_bytes
            elif storage.is_postgres(self.path):
                wal = 0  # a database's WAL is the server's: nothing to read here (and no query on the loop)
            else:
                wal = self.file_sizes()["wal_bytes"]
            self.history.append(
                Sample(
                    time.time(),
                    replication.commits_at_risk if replication is not None else 0,
                    replication.oldest_at_risk_s if replication is not None else 0.0,
                    wal,
                    figures.pending,
                    figures.mailbox_depth,
                )
            )
            await anyio.sleep(SAMPLE_EVERY_S)

    def close(self) -> None:
        """Stop live streams and sampling; close the pooled connections."""
        self.closing = True
        with self._lock:
            pool, self._pool = self._pool, []
        for journal in pool:
            journal.close()
