"""An actor's stream as server-sent events: the server's side and a client's.

``GET /actors/{type}/{key}/stream`` sends each :class:`runtime.StreamItem` as
one event: its offset (the entry's sequence number) as the ``id``, its kind
(``start``, ``restart``, ``chunk``, ``failed``, ``end``) as the ``event`` and
the whole item as JSON ``data``. A client that lost the connection sends the
last id it got as ``Last-Event-ID`` (browsers do this by themselves) and gets
what follows it; ``?offset=N`` starts at offset ``N``. Only committed entries
are sent, so nothing a client saw is ever taken back, whatever happened to
the server in between. While following, a comment line goes out every
``HEARTBEAT_S`` seconds without news, so that a client can tell a quiet
stream from a dead connection.

The client (:func:`follow`) is what ``python -m runtime stream`` and the demo
use: plain ``http.client``, and reconnecting from the last id it got.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import msgspec

from actors import SteleError

from .._followers import StreamItem
from .._runtime import Runtime

HEARTBEAT_S = 15.0
"""How long a following connection may be silent before a comment line is sent."""
READ_TIMEOUT_S = 4 * HEARTBEAT_S
"""How long a client waits for a line before it takes the connection for dead."""
RETRY_MS = 1000
"""What the stream tells browsers to wait before reconnecting."""

_json = msgspec.json.Encoder()


def event(item: StreamItem) -> bytes:
    """One item as an SSE event (its JSON holds no newline, so it is one ``data`` line)."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (item.offset, item.kind.encode(), _json.encode(item))


async def events(rt: Runtime, address: str, offset: int, *, follow: bool) -> AsyncIterator[bytes]:
    """The SSE body: ``retry``, then the items of ``address`` from ``offset``, with heartbeats when idle.

    The reading runs as a task of its own feeding a small queue, so that a
    heartbeat never interrupts it; the queue's bound holds it back when the
    client reads slowly.
    """
    queue: asyncio.Queue[StreamItem | None] = asyncio.Queue(maxsize=256)

    async def read() -> None:
        try:
            async for item in rt.stream(address, offset, follow=follow):
                await queue.put(item)
        except BaseException:
            with contextlib.suppress(asyncio.QueueFull):  # full: the heartbeat's wait finds the reader done
                queue.put_nowait(None)
            raise
        await queue.put(None)  # the end, after every item

    reader = asyncio.create_task(read())
    try:
        yield b"retry: %d\n\n" % RETRY_MS
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
            except TimeoutError:
                if reader.done():
                    break
                yield b": waiting\n\n"
                continue
            if item is None:
                break
            yield event(item)
        await reader  # its error, if it failed, is the response's
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader


def parse_offset(last_event_id: str | None, offset: str | None, high: int) -> int | str:
    """Where a request starts: after ``Last-Event-ID`` if sent (a reconnect), else at ``?offset``; or why not."""
    if last_event_id is not None:
        raw, name, shift = last_event_id.strip(), "Last-Event-ID", 1
    elif offset is not None:
        raw, name, shift = offset, "offset", 0
    else:
        return 0
    if not raw.isascii() or not raw.isdigit() or len(raw) > 20 or int(raw) > high - shift:
        return f"{name} must be an integer from 0 to {high - shift}, not {raw[:40]!r}"
    return int(raw) + shift


# -- the client ------------------------------------------------------------------------------


def read_events(lines: Iterator[bytes]) -> Iterator[tuple[str | None, str, str]]:
    """``(id, event, data)`` of each complete event in an SSE byte stream (comments skipped)."""
    ident: str | None = None
    kind = "message"
    data: list[str] = []
    for raw in lines:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield ident, kind, "\n".join(data)
            kind, data = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            ident = value
        elif name == "event":
            kind = value
        elif name == "data":
            data.append(value)


def follow(
    url: Callable[[], str],
    offset: int = 0,
    *,
    token: str | None = None,
    keep_following: bool = True,
    reconnect_for: float = 60.0,
) -> Iterator[dict[str, Any]]:
    """The items of a stream endpoint from ``offset``, each as a dict, exactly once, reconnecting as needed.

    ``url()`` gives the endpoint (asked again at each reconnection: a server
    that restarted may listen elsewhere). A lost connection is resumed with
    ``Last-Event-ID`` for up to ``reconnect_for`` seconds without one
    succeeding; then :class:`SteleError`. Without ``keep_following`` it ends
    once the server has sent what the stream holds now.
    """
    last: int | None = None
    failing_since: float | None = None
    while True:
        base = url()
        query = {"offset": str(offset)} if last is None else {}
        if not keep_following:
            query["follow"] = "false"
        target = base + ("?" + urllib.parse.urlencode(query) if query else "")
        request = urllib.request.Request(target, headers={"Accept": "text/event-stream"})
        if last is not None:
            request.add_header("Last-Event-ID", str(last))
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=READ_TIMEOUT_S) as answer:
                failing_since = None
                for ident, _, data in read_events(iter(answer.readline, b"")):
                    item = json.loads(data)
                    last = int(ident) if ident is not None else item["offset"]
                    yield item
            if not keep_following:
                return
            # The server ended the stream: it is stopping. Reconnect to the next one.
        except urllib.error.HTTPError as exc:
            with exc:
                body = exc.read().decode("utf-8", "replace")
            if exc.code < 500:
                raise SteleError(f"{target}: HTTP {exc.code}: {body[:200]}") from None
        except ValueError as exc:  # a malformed URL, or an answer that is not a stream of items
            raise SteleError(f"cannot read {target}: {exc}") from None
        except (OSError, http.client.HTTPException):
            pass  # refused, reset, timed out, cut mid-answer: reconnect
        now = time.monotonic()
        failing_since = failing_since or now
        if now - failing_since > reconnect_for:
            raise SteleError(f"cannot reach {base} for {reconnect_for:.0f} s: giving up")
        time.sleep(0.2)
