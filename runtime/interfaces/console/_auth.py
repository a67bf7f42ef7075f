"""Browser sessions and CSRF tokens for the console.

A browser cannot put a bearer token on a page it navigates to, so the console
signs a person in with the server's token once and gives the browser a session
cookie instead: ``v1.EXPIRES.NONCE.MAC``, where MAC is an HMAC keyed with the
token. Nothing is kept on the server: a cookie is valid wherever the same token
is, until it expires, and changing the token ends every session. The cookie is
``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page
sends it) and limited to the console's path.

Every POST of the console carries a CSRF token in a header, which only a page
of the console knows: an HMAC of the session's nonce (or, without a token, of a
secret made when the process started). A page of another site can neither read
it (the same-origin policy; DNS rebinding is refused by the Host check) nor
send a custom header without the browser asking the server first.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import urllib.parse

from starlette.requests import cookie_parser

COOKIE = "stele_session"
CSRF_HEADER = "x-stele-csrf"
SESSION_S = 12 * 3600
"""How long a sign-in lasts."""
PUBLIC = ("/login", "/static/")
"""Paths under the console's prefix served without a session."""


class Sessions:
    """Signs sessions in and checks them (see the module docstring); ``token`` None: no sign-in."""

    def __init__(self, token: str | None, prefix: str = "/ui") -> None:
        self.prefix = prefix
        self._key = token.encode() if token else None
        self._secret = secrets.token_bytes(32)
        self._clock = time.time

    @property
    def required(self) -> bool:
        """Whether a person must sign in (the server has a token)."""
        return self._key is not None

    # -- ConsoleGate (runtime.interfaces._http_guard) -------------------------------------

    def public(self, path: str) -> bool:
        """The sign-in page and static files."""
        inner = path[len(self.prefix) :]
        return inner == PUBLIC[0] or inner.startswith(PUBLIC[1])

    def signed_in(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """Whether a valid, unexpired session cookie came with the request."""
        return self.session(headers) is not None

    def sign_in_url(self, path: str, query: bytes) -> str:
        """The sign-in page, with where to go back to."""
        back = path + ("?" + query.decode("latin-1") if query else "")
        return f"{self.prefix}/login?next={urllib.parse.quote(back, safe='')}"

    # -- sessions ----------------------------------------------------------------------

    def session(self, headers: list[tuple[bytes, bytes]]) -> str | None:
        """The nonce of the request's valid session, or None (without a token: ``""``, everyone's)."""
        if self._key is None:
            return ""
        for name, value in headers:
            if name.lower() != b"cookie":
                continue
            cookie = cookie_parser(value.decode("latin-1")).get(COOKIE)
            if cookie is not None:
                nonce = self._verify(cookie)
                if nonce is not None:
                    return nonce
        return None

    def _verify(self, cookie: str) -> str | None:
        assert self._key is not None
        parts = cookie.split(".")
        if len(parts) != 4 or parts[0] != "v1" or not parts[1].isdigit():
            return None
        _, expires, nonce, mac = parts
        expected = self._mac(f"session|{expires}|{nonce}")
        if not hmac.compare_digest(mac.encode(), expected.encode()) or int(expires) < self._clock():
            return None
        return nonce

    def _mac(self, text: str) -> str:
        key = self._key if self._key is not None else self._secret
        return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()

    def check_token(self, given: str) -> bool:
        """Whether ``given`` is the server's token (compared in constant time)."""
        return self._key is not None and hmac.compare_digest(given.encode("utf-8", "replace"), self._key)

    def new_cookie(self, *, secure: bool) -> str:
        """A ``Set-Cookie`` value for a new session."""
        expires = int(self._clock()) + SESSION_S
        nonce = secrets.token_urlsafe(16)
        value = f"v1.{expires}.{nonce}.{self._mac(f'session|{expires}|{nonce}')}"
        return self._cookie(value, SESSION_S, secure=secure)

    def end_cookie(self, *, secure: bool) -> str:
        """A ``Set-Cookie`` value that ends the session."""
        return self._cookie("", 0, secure=secure)

    def _cookie(self, value: str, max_age: int, *, secure: bool) -> str:
        flags = f"; Path={self.prefix}; Max-Age={max_age}; HttpOnly; SameSite=Strict"
        return f"{COOKIE}={value}{flags}{'; Secure' if secure else ''}"

    # -- CSRF ----------------------------------------------------------------------------

    def csrf(self, session: str) -> str:
        """The CSRF token of a session (of everyone, without a token: ``session`` is ``""``)."""
        if self._key is None:
            return hmac.new(self._secret, b"csrf|", hashlib.sha256).hexdigest()
        return self._mac(f"csrf|{session}")

    def csrf_ok(self, headers: list[tuple[bytes, bytes]], host: str | None) -> bool:
        """Whether a POST carries its session's CSRF token and, if it says where it comes from, this origin."""
        session = self.session(headers)
        if session is None:
            return False
        given = origin = None
        for name, value in headers:
            lowered = name.lower()
            if lowered == CSRF_HEADER.encode():
                given = value.decode("latin-1")
            elif lowered == b"origin":
                origin = value.decode("latin-1")
        if origin is not None and host is not None and urllib.parse.urlsplit(origin).netloc.lower() != host.lower():
            return False
        return given is not None and hmac.compare_digest(given.encode(), self.csrf(session).encode())
