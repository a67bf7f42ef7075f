"""What every request passes before a route sees it: Host, bearer token, content type.

- Host: a server bound to loopback without a token is reachable from any web
  page the operator visits through DNS rebinding (``evil.example`` resolving to
  127.0.0.1), which lets that page read journals. So on a loopback bind the Host
  header must name loopback (``127.0.0.1``, ``localhost``, ``[::1]``, with or
  without the bound port) or a host the operator allows (``--allow-host``).
- Token: when one is configured, every route but ``/health`` needs
  ``Authorization: Bearer TOKEN``; the header is compared as bytes, so a header
  that is not text is refused like any other wrong one.
- Content type: a web page can POST ``text/plain`` or a form to any address
  without asking the browser first (a "simple" request), but not
  ``application/json``. Requiring it on POSTs closes that door (CSRF).
- The console (``/ui``): a browser cannot send a bearer token with a page it
  navigates to, so under the console's prefix a signed session cookie, made
  by signing in with the same token, stands for it; a page asked for without
  either is sent to the sign-in page. Its POSTs carry a CSRF token too (the
  console checks it).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Any, Protocol

from ._hosts import split_host
from ._http_outcomes import Answer, error, response

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})
"""Host names a loopback bind always accepts."""


def _first(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> tuple[bytes | None, int]:
    """The first value of header ``name`` and how many there are."""
    found = None
    count = 0
    for key, value in headers:
        if key.lower() == name:
            count += 1
            if found is None:
                found = value
    return found, count


class ConsoleGate(Protocol):
    """How the console's browser sessions stand in for the bearer token under its prefix."""

    prefix: str
    """Where the console is mounted (``/ui``)."""

    def public(self, path: str) -> bool:
        """Whether ``path`` (under the prefix) is served to anyone: the sign-in page, static files."""
        ...

    def signed_in(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """Whether the request carries a valid session cookie."""
        ...

    def sign_in_url(self, path: str, query: bytes) -> str:
        """Where to send a browser that asked for ``path`` without a session."""
        ...


class Guard:
    """ASGI middleware: the Host, token and content-type checks above.

    ``hosts`` None checks no Host header (a bind off loopback without
    ``--allow-host``); otherwise the names (lower case) a Host header may carry.
    ``console``: the console's sessions, accepted instead of the token under its prefix.
    """

    def __init__(
        self, app: Any, *, token: str | None, hosts: frozenset[str] | None, console: ConsoleGate | None = None
    ) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.hosts = hosts
        self.console = console

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            refusal = self.check(scope)
            if refusal is not None:
                await response(refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def check(self, scope: Any) -> Answer | None:
        """The refusal for this request, or None when it may go on."""
        headers = scope.get("headers") or []
        if self.hosts is not None:
            refusal = self._host(headers, scope.get("server"))
            if refusal is not None:
                return refusal
        if self.token is not None and scope["path"] != "/health":
            refusal = self._token(headers)
            if refusal is not None:
                refusal = self._console(scope, headers, refusal)
            if refusal is not None:
                return refusal
        if scope["method"] == "POST":
            value, _ = _first(headers, b"content-type")
            media = (value or b"").split(b";", 1)[0].strip().lower()
            if media != b"application/json":
                shown = value.decode("latin-1")[:100] if value is not None else "none"
                return error(415, "unsupported", f"a POST body must be Content-Type: application/json, not {shown!r}")
        return None

    def _host(self, headers: list[tuple[bytes, bytes]], server: Any) -> Answer | None:
        assert self.hosts is not None
        value, count = _first(headers, b"host")
        if value is None or count > 1:
            return error(421, "misdirected", "exactly one Host header is required")
        shown = value.decode("latin-1")[:100]
        parts = split_host(value.decode("latin-1").lower()) if value.isascii() else None
        bound = str(server[1]) if isinstance(server, tuple | list) and len(server) > 1 else None
        if parts is not None:
            name, port = parts
            if name in self.hosts and (not port or bound is None or port == bound):
                return None
        allowed = ", ".join(sorted(self.hosts))
        return error(
            421,
            "misdirected",
            f"Host {shown!r} is not served here: this server answers to {allowed} "
            f"(with or without port {bound}); start it with --allow-host NAME to add a name",
        )

    def _console(self, scope: Any, headers: list[tuple[bytes, bytes]], refusal: Answer) -> Answer | None:
        """Under the console's prefix: its public pages, a session instead of the token, or the sign-in page."""
        console = self.console
        path: str = scope["path"]
        if console is not None and path == "/" and scope["method"] == "GET" and _accepts_html(headers):
            return Answer(303, {"error": "unauthorized", "message": "the console"}, {"Location": console.prefix + "/"})
        if console is None or not (path == console.prefix or path.startswith(console.prefix + "/")):
            return refusal
        if console.public(path) or console.signed_in(headers):
            return None
        if scope["method"] == "GET" and _accepts_html(headers):
            return Answer(303, {"error": "unauthorized", "message": "sign in first"}, {
                "Location": console.sign_in_url(path, scope.get("query_string") or b"")
            })  # fmt: skip
        return refusal

    def _token(self, headers: list[tuple[bytes, bytes]]) -> Answer | None:
        assert self.token is not None
        value, count = _first(headers, b"authorization")
        scheme, _, given = (value or b"").strip().partition(b" ")
        if count == 1 and scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token):
            return None
        answer = error(401, "unauthorized", "a valid bearer token is required (Authorization: Bearer TOKEN)")
        answer.headers["WWW-Authenticate"] = "Bearer"
        return answer


def _accepts_html(headers: list[tuple[bytes, bytes]]) -> bool:
    value, _ = _first(headers, b"accept")
    return value is not None and b"text/html" in value.lower()
