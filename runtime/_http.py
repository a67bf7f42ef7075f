"""HTTP ingress and admin API over a running :class:`Runtime` (Starlette, msgspec JSON).

Starlette is the ASGI layer (routing, requests, responses) and uvicorn serves
it, both well kept and asyncio-native, so handlers, the runtime and the HTTP
server share one event loop. JSON goes through msgspec, which also validates
bodies against the handler's message type and names the offending field.
"""

from __future__ import annotations

import hmac
import os
import time
from typing import Any

import anyio.to_thread
import msgspec
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import storage
from actors import (
    ActorSuspendedError,
    AskTimeoutError,
    CommitUnknownError,
    HandlerError,
    MessageValidationError,
    ReplicationTimeout,
    ReplyUnavailableError,
    RuntimeClosedError,
    SteleError,
    UnknownActorTypeError,
    UnknownHandlerError,
)

from ._rebuild import load
from ._runtime import Runtime

_json = msgspec.json.Encoder()


def _reply(status: int, body: Any) -> Response:
    return Response(_json.encode(body), status_code=status, media_type="application/json")


def _error(status: int, kind: str, message: str) -> Response:
    return _reply(status, {"error": kind, "message": message})


def _plain(value: Any) -> Any:
    """A JSON-able form of a decoded payload (msgspec structs stay structs)."""
    return msgspec.to_builtins(value, str_keys=True, builtin_types=())


class App:
    """The HTTP API; ``app.asgi`` is the ASGI application."""

    def __init__(self, rt: Runtime, *, token: str | None = None, max_body: int = 1 << 20) -> None:
        self.rt = rt
        self.token = token
        self.max_body = max_body
        self.started = time.time()
        self.metrics = CollectorRegistry(auto_describe=True)
        self.metrics.register(_Collector(rt))
        self.asgi = Starlette(
            routes=[
                Route("/actors/{type}/{key}/{handler}", self.send, methods=["POST"]),
                Route("/actors", self.actors, methods=["GET"]),
                Route("/actors/{type}/{key}", self.actor, methods=["GET"]),
                Route("/actors/{type}/{key}/journal", self.journal, methods=["GET"]),
                Route("/status", self.status, methods=["GET"]),
                Route("/health", self.health, methods=["GET"]),
                Route("/metrics", self.prometheus, methods=["GET"]),
            ],
        )
        self.asgi.add_middleware(_Auth, token=token)

    async def send(self, request: Request) -> Response:
        """POST /actors/{type}/{key}/{handler}: ask (JSON reply) or, with ?wait=false, tell (202)."""
        address = f"{request.path_params['type']}/{request.path_params['key']}"
        key = request.headers.get("idempotency-key") or None
        try:
            desc, _ = self.rt.registry.resolve(address)
            info = self.rt.registry.handler_named(desc, request.path_params["handler"])
        except (UnknownActorTypeError, UnknownHandlerError) as exc:
            return _error(404, "not_found", str(exc))
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return _error(413, "too_large", f"the body is larger than {self.max_body} bytes")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body:
                return _error(413, "too_large", f"the body is larger than {self.max_body} bytes")
        try:
            msg = msgspec.json.decode(body or b"{}", type=info.message_type)
        except msgspec.ValidationError as exc:
            return _error(422, "invalid", f"{info.message_type.__qualname__}: {exc}")
        except msgspec.DecodeError as exc:
            return _error(400, "malformed", f"the body is not JSON: {exc}")
        wait = request.query_params.get("wait", "true").lower() not in ("false", "0", "no")
        durability = request.query_params.get("durability")
        try:
            if not wait:
                await self.rt.tell(address, msg, durability=durability, idempotency_key=key)
                return _reply(202, {"accepted": True, "address": address})
            value = await self.rt.ask(address, msg, durability=durability, idempotency_key=key)
            return _reply(200, value)
        except MessageValidationError as exc:
            return _error(422, "invalid", str(exc))
        except HandlerError as exc:
            return _reply(500, {"error": "handler", "type": exc.type_name, "message": exc.message})
        except (RuntimeClosedError, ActorSuspendedError) as exc:
            return _error(503, "unavailable", str(exc))
        except (AskTimeoutError, ReplicationTimeout) as exc:
            return _error(504, "timeout", str(exc))
        except CommitUnknownError as exc:  # may or may not be in the journal: resending may run it twice
            return _error(504, "unknown", str(exc))
        except ReplyUnavailableError as exc:  # accepted: resending it would run it twice
            return _error(504, "no_reply", str(exc))
        except SteleError as exc:
            return _error(503, "unavailable", str(exc))

    def _journal(self) -> storage.Journal:
        return storage.Journal.open(self.rt.path)

    async def actors(self, request: Request) -> Response:
        """GET /actors: every actor with its last position and status."""

        def read() -> list[Any]:
            with self._journal() as journal:
                return [_plain(a) for a in journal.actors(request.query_params.get("type"))]

        return _reply(200, await anyio.to_thread.run_sync(read))

    async def actor(self, request: Request) -> Response:
        """GET /actors/{type}/{key}: state (rebuilt from the journal), position, status."""
        address = f"{request.path_params['type']}/{request.path_params['key']}"
        try:
            desc, key = self.rt.registry.resolve(address)
        except UnknownActorTypeError as exc:
            return _error(404, "not_found", str(exc))

        def read() -> Any:
            with self._journal() as journal:
                loaded = load(journal, desc, self.rt.registry.codec, address, key)
                info = loaded.info
                return {
                    "address": address,
                    "state": _plain(loaded.instance.state),
                    "last_seq": info.last_seq if info else 0,
                    "status": info.status if info else "new",
                    "reason": info.reason if info else None,
                }

        try:
            return _reply(200, await anyio.to_thread.run_sync(read))
        except storage.UndecodableEntry as exc:
            return _error(500, "undecodable", str(exc))

    async def journal(self, request: Request) -> Response:
        """GET /actors/{type}/{key}/journal?from=&limit=: a page of the actor's entries."""
        address = f"{request.path_params['type']}/{request.path_params['key']}"
        try:
            start = int(request.query_params.get("from", "0"))
            limit = min(int(request.query_params.get("limit", "100")), 10_000)
        except ValueError:
            return _error(400, "malformed", "from and limit must be integers")

        def read() -> list[Any]:
            with self._journal() as journal:
                page = []
                for entry in journal.entries(address, start):
                    page.append(
                        {
                            "position": entry.position,
                            "seq": entry.seq,
                            "step": entry.step,
                            "kind": entry.kind,
                            "type": entry.type,
                            "at": entry.at,
                            "data": entry.decoded(),
                        }
                    )
                    if len(page) >= limit:
                        break
                return page

        return _reply(200, await anyio.to_thread.run_sync(read))

    async def status(self, request: Request) -> Response:
        """GET /status: the runtime, its journal and replication."""
        return _reply(200, runtime_status(self.rt, self.started))

    async def health(self, request: Request) -> Response:
        """GET /health: 200 while the runtime accepts messages (open, and its journal takes commits)."""
        failing = self.rt.journal_failing if self.rt._open else None
        ok = self.rt._open and failing is None
        return _reply(200 if ok else 503, {"ok": ok, "journal_failing": failing})

    async def prometheus(self, request: Request) -> Response:
        """GET /metrics: Prometheus text format."""
        return Response(generate_latest(self.metrics), media_type="text/plain; version=0.0.4")


def runtime_status(rt: Runtime, started: float) -> dict[str, Any]:
    """What ``status`` reports about a running runtime."""
    path = rt.path
    replication = rt.replication
    return {
        "journal": os.path.abspath(path),
        "journal_bytes": _size(path),
        "wal_bytes": _size(path + "-wal"),
        "uptime_s": time.time() - started,
        "active_actors": len(rt._active),
        "mailbox_depth": sum(len(c.mailbox) for c in rt._cells.values()),
        "suspended": sorted(c.address for c in rt._cells.values() if c.suspended),
        "commits": rt.stats.batches,
        "units": rt.stats.units,
        "journal_failing": rt.journal_failing,
        "replication": _plain(replication) if replication is not None else None,
    }


def _size(path: str) -> int:
    return os.path.getsize(path) if os.path.exists(path) else 0


class _Auth:
    """Bearer-token check on every route but /health (when a token is configured)."""

    def __init__(self, app: Any, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.token and scope["type"] == "http" and scope["path"] != "/health":
            headers = dict(scope.get("headers") or [])
            given = headers.get(b"authorization", b"").decode()
            if not hmac.compare_digest(given, f"Bearer {self.token}"):
                await _error(401, "unauthorized", "a valid bearer token is required")(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _Collector:
    """Runtime figures for Prometheus, read at scrape time (nothing on the hot path)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def collect(self) -> Any:
        rt = self.rt
        stats = rt.stats
        yield CounterMetricFamily(
            "stele_commits", "Journal transactions committed (group commits)", value=stats.batches
        )
        yield CounterMetricFamily("stele_units", "Units of work committed (steps, tells, effects)", value=stats.units)
        yield CounterMetricFamily("stele_commit_seconds", "Time spent committing", value=stats.commit_seconds)
        yield GaugeMetricFamily("stele_active_actors", "Actors in memory", value=len(rt._active))
        yield GaugeMetricFamily(
            "stele_journal_failing", "1 while journal commits fail (full disk, I/O errors)",
            value=0 if rt.journal_failing is None else 1,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "stele_mailbox_depth",
            "Messages waiting in mailboxes",
            value=sum(len(c.mailbox) for c in rt._cells.values()),
        )
        status = rt.replication
        if status is not None:
            yield GaugeMetricFamily(
                "stele_replication_commits_at_risk", "Commits not yet in the replica", value=status.commits_at_risk
            )
            yield GaugeMetricFamily(
                "stele_replication_oldest_at_risk_seconds", "Age of the oldest", value=status.oldest_at_risk_s
            )
            yield GaugeMetricFamily(
                "stele_litestream_running", "1 while Litestream runs", value=1 if status.litestream_running else 0
            )
