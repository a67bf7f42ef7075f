"""What the console does, as JSON POSTs: sign in and out, run a query, and operate the runtime.

Every action is a POST whose body is JSON, whose ``X-Stele-CSRF`` header
carries the page's CSRF token, and (for operations) which says
``"confirmed": true``: the page asks the person first, in a dialog that shows
what will be done. Operations go through the runtime's public calls
(``rt.resolve``, ``rt.retry_dead_letter``, ``rt.drop_dead_letter``,
``rt.resume``; a message through the HTTP API's own path, so it is validated
and answered exactly as ``POST /actors/...``). A console over a file is
read-only: it refuses them all.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import anyio.to_thread
import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

import storage
from actors import SteleError

from ._auth import Sessions
from ._model import compact
from ._source import Source

log = logging.getLogger("stele.console")

MAX_BODY = 1 << 20
SIGN_IN_DELAY_S = 0.5
"""A wrong token waits this long for its answer: guessing tokens over HTTP is slow."""
QUERY_ROWS = 1000
QUERY_TIMEOUT_S = 10.0


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(msgspec.json.encode(body), status_code=status, media_type="application/json", headers=headers)


def _refuse(status: int, code: str, message: str) -> Response:
    return _json({"error": code, "message": message}, status)


def _error(exc: SteleError) -> Response:
    return _refuse(exc.status, exc.code, str(exc))


class Actions:
    """The POST routes of the console."""

    def __init__(self, sessions: Sessions, source: Source) -> None:
        self.sessions = sessions
        self.source = source

    async def _read(self, request: Request, *, csrf: bool = True) -> dict[str, Any] | Response:
        """The JSON object of a POST, after its CSRF token is checked."""
        headers = list(request.scope.get("headers") or [])
        if csrf and not self.sessions.csrf_ok(headers, request.headers.get("host")):
            return _refuse(403, "csrf", "this request did not come from a page of this console (reload the page)")
        chunks = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_BODY:
                    return _refuse(413, "too_large", f"the body is larger than {MAX_BODY} bytes")
                chunks.append(chunk)
        except ClientDisconnect:
            return _refuse(400, "malformed", "the client went away")
        try:
            body = msgspec.json.decode(b"".join(chunks) or b"{}")
        except (msgspec.DecodeError, RecursionError) as exc:
            return _refuse(400, "malformed", f"the body is not JSON: {exc}")
        if not isinstance(body, dict):
            return _refuse(400, "malformed", "the body must be a JSON object")
        return body

    async def _operation(self, request: Request) -> dict[str, Any] | Response:
        """The body of a confirmed operation on a live runtime."""
        if not self.source.live:
            return _refuse(
                403, "read_only", "this console reads a journal file; operate through a runtime that serves it (serve)"
            )
        body = await self._read(request)
        if isinstance(body, Response):
            return body
        if body.get("confirmed") is not True:
            return _refuse(400, "unconfirmed", 'an operation must be confirmed ("confirmed": true)')
        rt = self.source.runtime
        if rt is None or not rt.statistics().open or self.source.closing:
            return _refuse(503, "closed", "the server is shutting down: nothing was done")
        return body

    @staticmethod
    def _text(body: dict[str, Any], name: str) -> str | Response:
        value = body.get(name)
        if not isinstance(value, str) or not value:
            return _refuse(400, "malformed", f"{name} must be a non-empty string")
        return value

    @staticmethod
    def _id(body: dict[str, Any]) -> int | Response:
        value = body.get("id")
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return _refuse(400, "malformed", "id must be a dead letter's id (a whole number)")
        return value

    # -- signing in ----------------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        """``{"token": ...}``: a session cookie for the server's token."""
        if not self.sessions.required:
            return _json({"ok": True, "message": "this console needs no sign-in"})
        body = await self._read(request, csrf=False)
        if isinstance(body, Response):
            return body
        token = body.get("token")
        if not isinstance(token, str) or not self.sessions.check_token(token):
            await anyio.sleep(SIGN_IN_DELAY_S)
            return _refuse(401, "unauthorized", "that is not this server's token")
        secure = request.url.scheme == "https"
        return _json({"ok": True}, headers={"Set-Cookie": self.sessions.new_cookie(secure=secure)})

    async def logout(self, request: Request) -> Response:
        """End the session."""
        body = await self._read(request)
        if isinstance(body, Response):
            return body
        secure = request.url.scheme == "https"
        return _json({"ok": True}, headers={"Set-Cookie": self.sessions.end_cookie(secure=secure)})

    # -- SQL --------------------------------------------------------------------------------------------

    async def sql(self, request: Request) -> Response:
        """``{"query": ...}``: rows of one read-only statement over the journal's views."""
        body = await self._read(request)
        if isinstance(body, Response):
            return body
        query = body.get("query")
        if not isinstance(query, str):
            return _refuse(400, "malformed", "query must be a string")

        def run() -> storage.QueryResult:
            return storage.query(self.source.path, query, max_rows=QUERY_ROWS, timeout=QUERY_TIMEOUT_S)

        try:
            result = await anyio.to_thread.run_sync(run)
        except SteleError as exc:
            return _error(exc)
        rows = [[_cell(v) for v in row] for row in result.rows]
        return _json(
            {"columns": result.columns, "rows": rows, "truncated": result.truncated, "ms": result.seconds * 1000}
        )

    # -- operating --------------------------------------------------------------------------------------

    async def resolve(self, request: Request) -> Response:
        """``{"address", "name", "value": JSON text}``: ``rt.resolve``."""
        body = await self._operation(request)
        if isinstance(body, Response):
            return body
        address, name, raw = self._text(body, "address"), self._text(body, "name"), body.get("value")
        for part in (address, name):
            if isinstance(part, Response):
                return part
        assert isinstance(address, str) and isinstance(name, str)
        if not isinstance(raw, str):
            return _refuse(400, "malformed", "value must be JSON text")
        try:
            value = msgspec.json.decode(raw)
        except (msgspec.DecodeError, RecursionError) as exc:
            return _refuse(400, "malformed", f"the value is not JSON: {exc}")
        rt = self.source.runtime
        assert rt is not None
        try:
            await rt.resolve(address, name, value)
        except SteleError as exc:
            return _error(exc)
        log.info("console: resolved promise %r of %s", name, address)
        return _json({"ok": True, "message": f"resolved {name} of {address} with {compact(value)[:200]}"})

    async def retry(self, request: Request) -> Response:
        """``{"id"}``: ``rt.retry_dead_letter``."""
        return await self._letter(request, retry=True)

    async def drop(self, request: Request) -> Response:
        """``{"id"}``: ``rt.drop_dead_letter``."""
        return await self._letter(request, retry=False)

    async def _letter(self, request: Request, *, retry: bool) -> Response:
        body = await self._operation(request)
        if isinstance(body, Response):
            return body
        letter = self._id(body)
        if isinstance(letter, Response):
            return letter
        rt = self.source.runtime
        assert rt is not None
        try:
            if retry:
                await rt.retry_dead_letter(letter)
            else:
                await rt.drop_dead_letter(letter)
        except SteleError as exc:
            return _error(exc)
        done = "back in its actor's inbox" if retry else "dropped"
        log.info("console: dead letter %d %s", letter, done)
        return _json({"ok": True, "message": f"dead letter {letter} {done}"})

    async def resume(self, request: Request) -> Response:
        """``{"address"}``: ``rt.resume``."""
        body = await self._operation(request)
        if isinstance(body, Response):
            return body
        address = self._text(body, "address")
        if isinstance(address, Response):
            return address
        rt = self.source.runtime
        assert rt is not None
        try:
            await rt.resume(address)
        except SteleError as exc:
            return _error(exc)
        log.info("console: resumed %s", address)
        return _json({"ok": True, "message": f"{address} resumed"})

    async def send(self, request: Request) -> Response:
        """``{"address", "handler", "body": {...}, "ask": bool}``: as ``POST /actors/...`` would."""
        body = await self._operation(request)
        if isinstance(body, Response):
            return body
        address, handler = self._text(body, "address"), self._text(body, "handler")
        for part in (address, handler):
            if isinstance(part, Response):
                return part
        assert isinstance(address, str) and isinstance(handler, str)
        message = body.get("body", {})
        ask = body.get("ask", True)
        if not isinstance(ask, bool):
            return _refuse(400, "malformed", "ask must be true or false")
        operator = self.source.operator
        if operator is None:
            return _refuse(403, "read_only", "this console has no HTTP API to send messages through")
        answer = await operator.deliver(request, address, handler, msgspec.json.encode(message), ask=ask)
        return _json({"status": answer.status, "body": answer.body})


def _cell(value: Any) -> Any:
    """A query result value for the page: blobs as hex."""
    if isinstance(value, bytes | memoryview):
        data = bytes(value)
        return f"x'{data[:256].hex()}{'…' if len(data) > 256 else ''}'"
    return value
