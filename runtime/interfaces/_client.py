"""Talking to a running server from the command line (urllib: nothing to install)."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from actors import SteleError

from ._hosts import loopback, split_host, wildcard


def call(
    url: str, *, token: str | None, body: bytes | None = None, key: str | None = None, timeout: float = 60
) -> tuple[int, Any]:
    """POST ``body`` (GET without one) to ``url``: the status and the decoded JSON answer (text if not JSON).

    Raises :class:`SteleError` when the server cannot be reached.
    """
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if key:
        request.add_header("Idempotency-Key", key)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, _decoded(answer.read())
    except urllib.error.HTTPError as exc:
        with exc:
            try:
                return exc.code, _decoded(exc.read())
            except (OSError, http.client.HTTPException) as cut:  # the server went away in the middle of it
                raise SteleError(f"cannot reach {url}: its answer ({exc.code}) was cut short: {cut!r}") from None
    except (OSError, ValueError, http.client.HTTPException) as exc:
        # URLError is an OSError; ValueError: a malformed URL; HTTPException: the
        # server went away in the middle of its answer (IncompleteRead, say).
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise SteleError(f"cannot reach {url}: {reason}") from None


def _decoded(data: bytes) -> Any:
    try:
        return json.loads(data or b"null")
    except ValueError:
        return data.decode("utf-8", "replace")


def recorded_server(address: Any) -> tuple[str | None, str | None]:
    """The URL of the server a journal records (``serve`` writes its ``HOST:PORT``), or why not to use it.

    Only a server on this machine is asked: the address comes from the journal
    file, and the request carries the token.
    """
    if not address:
        return None, None
    parts = split_host(str(address))
    if parts is None or not parts[1]:
        return None, f"the journal records an unusable server address {str(address)[:80]!r}"
    name, port = parts
    if wildcard(name):
        name = "[::1]" if ":" in name else "127.0.0.1"
    if not loopback(name):
        return None, f"the journal names a server at {name}:{port}, not on this machine: pass --url to ask it"
    return f"http://{name}:{port}", None


def endpoint(base: str, *segments: str) -> str:
    """``base`` followed by ``segments``, each percent-encoded."""
    return base.rstrip("/") + "".join("/" + urllib.parse.quote(s, safe="") for s in segments)
