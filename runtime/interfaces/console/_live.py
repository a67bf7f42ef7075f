"""Live pages: server-sent events, fed by one watcher of the journal file.

The watcher asks the file, four times a second, whether another connection has
committed (SQLite's ``data_version``: a read of shared memory), so it sees the
commits of a runtime in this process and of one in another process alike; a
stream wakes when it changes and reads only what is new. Under ``serve``, the
streams also look every two seconds at what the runtime says of itself
(``rt.statistics()``), which changes without a commit (a step starts waiting).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread
import msgspec
from starlette.responses import Response, StreamingResponse

import storage

from ._source import Source

POLL_S = 0.25
"""How often the watcher looks at the file."""
LIVE_S = 2.0
"""How often a stream looks at the runtime's own figures, commits or not."""
KEEPALIVE_S = 15.0
MAX_STREAMS = 64
"""Open streams at once; beyond, a new one is refused (503) and the page keeps working without."""

_encode = msgspec.json.Encoder().encode


def event(name: str, data: Any) -> bytes:
    """One server-sent event (JSON data: one line, so no field can break the frame)."""
    return b"event: " + name.encode() + b"\ndata: " + _encode(data) + b"\n\n"


class Watcher:
    """Notices commits to the journal; streams wait on it."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.generation = 0
        self.streams = 0
        self._changed = anyio.Event()
        self._task: asyncio.Task[None] | None = None
        self._journal: storage.Journal | None = None

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        last: int | None = None
        try:
            while self.streams and not self.source.closing:
                try:
                    version = await anyio.to_thread.run_sync(self._version)
                except storage.StorageError:
                    version = -1  # the file is unreadable now: wake the streams, which will say so
                if version != last:
                    last = version
                    self._bump()
                await anyio.sleep(POLL_S)
        finally:
            journal, self._journal = self._journal, None
            if journal is not None:
                await anyio.to_thread.run_sync(journal.close)

    def _version(self) -> int:
        if self._journal is None:
            self._journal = storage.Journal.open(self.source.path)
        try:
            return self._journal.version()
        except storage.StorageError:
            self._journal.close()
            self._journal = None
            raise

    def _bump(self) -> None:
        self.generation += 1
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def wait(self, seen: int, timeout: float) -> int:
        """Until the journal changes after generation ``seen`` (or ``timeout``); the generation now."""
        with anyio.move_on_after(timeout):
            while self.generation == seen and not self.source.closing:
                await self._changed.wait()
        return self.generation

    @contextlib.asynccontextmanager
    async def subscribed(self) -> AsyncIterator[None]:
        """A stream's lifetime: the watcher runs while any stream does."""
        self.streams += 1
        self._start()
        try:
            yield
        finally:
            self.streams -= 1

    def close(self) -> None:
        """Stop watching (streams end at their next wake-up)."""
        self._bump()
        if self._task is not None:
            self._task.cancel()


Update = Callable[[], Awaitable[list[bytes]]]
"""What a stream sends when it wakes: the events that changed since it last sent (maybe none)."""


def stream(watcher: Watcher, update: Update, *, live: bool) -> Response:
    """A server-sent event stream that calls ``update`` at start and whenever the journal changes."""
    if watcher.streams >= MAX_STREAMS:
        return Response("too many live pages open", status_code=503, headers={"Retry-After": "5"})

    async def events() -> AsyncIterator[bytes]:
        async with watcher.subscribed():
            yield b"retry: 2000\n\n"
            seen = watcher.generation
            while not watcher.source.closing:
                try:
                    sent = await update()
                except storage.StorageError as exc:
                    sent = [event("problem", {"message": str(exc)})]
                for chunk in sent:
                    yield chunk
                before = seen
                seen = await watcher.wait(seen, LIVE_S if live else KEEPALIVE_S)
                if seen == before and not sent:
                    yield b": still here\n\n"

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


class Changes:
    """Sends an event only when its data differs from what was sent last."""

    def __init__(self) -> None:
        self._last: dict[str, bytes] = {}

    def event(self, name: str, data: Any) -> list[bytes]:
        """``[event]`` if ``data`` changed since the last ``name`` event, else ``[]``."""
        encoded = event(name, data)
        if self._last.get(name) == encoded:
            return []
        self._last[name] = encoded
        return [encoded]
