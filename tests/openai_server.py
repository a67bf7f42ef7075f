"""A small scripted OpenAI-compatible server on 127.0.0.1, speaking the real wire format.

``POST /v1/chat/completions`` answers with the next :class:`Reply` of its
script: a ``chat.completion`` object, or with ``"stream": true`` server-sent
``chat.completion.chunk`` events ending in ``data: [DONE]``, tool calls
included (id and name first, the arguments in pieces), as OpenAI sends them.
A reply can also fail: an error status with the API's error body, a
connection cut in the middle of a stream, or a stream that stalls. Every
request is kept, so tests can tell how often the model was called, and with what.

It runs uvicorn in a thread of its own, so that it serves sync and async tests alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class Reply:
    """One scripted answer."""

    text: str = ""
    tool_calls: list[tuple[str, str, str]] = field(default_factory=list)
    """``(id, name, arguments JSON)`` of each tool call."""
    status: int = 200
    """Another status: the API's error body instead of an answer."""
    cut_after: int | None = None
    """Streaming: drop the connection after this many chunks."""
    stall_after: int | None = None
    """Streaming: send nothing more after this many chunks (until the client goes away)."""
    pace: float = 0.0
    """Streaming: seconds between chunks."""


def tokens(text: str) -> list[str]:
    """``text`` in word-sized tokens, spaces kept (joined, they are ``text`` again)."""
    out: list[str] = []
    for word in text.split(" "):
        out.append(word if not out else " " + word)
    return [t for t in out if t]


class Cut(Exception):
    """Raised inside a streamed body: uvicorn drops the connection mid-answer."""


class OpenAIServer:
    """The server: ``script`` is consumed one reply per request; ``requests`` holds each request body."""

    def __init__(self, script: list[Reply] | None = None, model: str = "scripted-1") -> None:
        self.script = list(script or [])
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self._server = _Quiet(
            uvicorn.Config(
                Starlette(routes=[Route("/v1/chat/completions", self._complete, methods=["POST"])]),
                host="127.0.0.1",
                port=0,
                log_level="critical",
                lifespan="off",
            )
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._count = 0

    @property
    def url(self) -> str:
        """The ``base_url`` to give the client."""
        port = self._server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    def calls(self) -> int:
        with self.lock:
            return len(self.requests)

    def add(self, *replies: Reply) -> None:
        with self.lock:
            self.script.extend(replies)

    def __enter__(self) -> OpenAIServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            assert time.monotonic() < deadline, "the scripted OpenAI server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(30)

    async def _complete(self, request: Request) -> Response:
        body = json.loads(await request.body())
        with self.lock:
            self.requests.append(body)
            reply = self.script.pop(0) if self.script else Reply("(the script has run out)")
            self._count += 1
            ident = f"chatcmpl-{self._count}"
        if reply.status != 200:
            error = {"message": f"scripted failure {reply.status}", "type": "server_error", "code": None}
            return JSONResponse({"error": error}, status_code=reply.status)
        if body.get("stream"):
            return StreamingResponse(self._chunks(ident, reply, body), media_type="text/event-stream")
        return JSONResponse(self._completion(ident, reply))

    def _completion(self, ident: str, reply: Reply) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text if not reply.tool_calls else None}
        if reply.tool_calls:
            message["tool_calls"] = [
                {"id": i, "type": "function", "function": {"name": n, "arguments": a}} for i, n, a in reply.tool_calls
            ]
        return {
            "id": ident,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {"index": 0, "message": message, "finish_reason": "tool_calls" if reply.tool_calls else "stop"}
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }

    async def _chunks(self, ident: str, reply: Reply, body: dict[str, Any]) -> AsyncIterator[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            data = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return b"data: " + json.dumps(data).encode() + b"\n\n"

        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        deltas += [{"content": t} for t in tokens(reply.text)]
        for index, (call_id, name, arguments) in enumerate(reply.tool_calls):
            deltas.append({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                           "function": {"name": name, "arguments": ""}}]})  # fmt: skip
            for piece in (arguments[i : i + 8] for i in range(0, len(arguments), 8)):
                deltas.append({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        for sent, delta in enumerate(deltas):
            if reply.cut_after is not None and sent == reply.cut_after:
                raise Cut(f"scripted cut after {sent} chunks")
            if reply.stall_after is not None and sent == reply.stall_after:
                await asyncio.sleep(60)  # the client times out and goes away first
            if reply.pace:
                await asyncio.sleep(reply.pace)
            yield chunk(delta)
        yield chunk({}, "tool_calls" if reply.tool_calls else "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 10, "completion_tokens": len(deltas), "total_tokens": 10 + len(deltas)}
            data = {"id": ident, "object": "chat.completion.chunk", "created": int(time.time()),
                    "model": self.model, "choices": [], "usage": usage}  # fmt: skip
            yield b"data: " + json.dumps(data).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"


class _Quiet(uvicorn.Server):
    """uvicorn leaving signal handlers alone (it runs in a thread)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
