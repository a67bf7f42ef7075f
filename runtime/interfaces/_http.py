"""HTTP ingress and admin API over a running :class:`Runtime` (Starlette, msgspec JSON).

Starlette is the ASGI layer (routing, requests, responses) and uvicorn serves
it, both well kept and asyncio-native, so handlers, the runtime and the HTTP
server share one event loop. JSON goes through msgspec, which also validates
bodies against the handler's message type and names the offending field.

Every input is checked here, before the runtime sees it, so that nothing is
committed for a request that is then refused; every outcome of a message maps
to one status (see :mod:`runtime._http_outcomes`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Coroutine, Iterator
from typing import Any

import anyio.to_thread
import msgspec
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

import storage
from actors import SteleError, UnknownActorTypeError, UnknownHandlerError

from .._options import DURABILITIES
from .._rebuild import load
from .._runtime import Runtime
from .._statistics import RuntimeStatistics
from . import _openapi, _sse
from ._http_guard import Guard
from ._http_outcomes import Answer, accepted, error, outcome, response, unknown
from ._openapi import MAX_KEY, MAX_PAGE, MAX_POSITION
from .console import Console, Sessions, Source

log = logging.getLogger("stele.http")

_WAIT = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_INTEGER = re.compile(r"-?[0-9]{1,20}")
CONSOLE_PREFIX = "/ui"
"""Where serve mounts the console."""
WATCH_AFTER_S = 0.2
"""How long a call runs before its client is watched for going away."""


def _plain(value: Any) -> Any:
    """A JSON-able form of a decoded payload (msgspec structs stay structs)."""
    return msgspec.to_builtins(value, str_keys=True, builtin_types=())


def _ok(body: Any, status: int = 200) -> Response:
    return response(Answer(status, body))


def _integer(request: Request, name: str, default: int, low: int, high: int) -> int | Answer:
    """Query parameter ``name`` as an integer in [low, high], or the 400 refusing it."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if _INTEGER.fullmatch(raw) is None or not low <= int(raw) <= high:
        return error(400, "malformed", f"{name} must be an integer from {low} to {high}, not {raw[:40]!r}")
    return int(raw)


class App:
    """The HTTP API; ``app.asgi`` is the ASGI application.

    ``hosts``: the Host names accepted (None: any; see :mod:`runtime._http_guard`).
    """

    def __init__(
        self,
        rt: Runtime,
        *,
        token: str | None = None,
        hosts: frozenset[str] | None = None,
        max_body: int = 1 << 20,
        console: bool = True,
    ) -> None:
        self.rt = rt
        self.token = token
        self.max_body = max_body
        self.started = time.time()
        self.waiting = 0
        self.nodes_seen: list[storage.NodeInfo] = []
        """The nodes of a shared database, as last read (for /metrics)."""
        """Requests waiting for the runtime right now."""
        self.closing = False
        self._stop: asyncio.Future[None] | None = None
        self._abandoned: set[asyncio.Task[Any]] = set()
        self.sizes: list[storage.HistorySize] = []
        """Each actor's history size, as of the last refresh (at most every ``SIZES_EVERY_S``)."""
        self._sizes_at = -SIZES_EVERY_S
        self._sizes_runs = 0
        self.metrics = CollectorRegistry(auto_describe=True)
        self.metrics.register(_Collector(self))
        self.openapi = msgspec.json.encode(
            _openapi.describe(rt.registry, token=bool(token), host_checked=hosts is not None)
        )
        sessions = Sessions(token, prefix=CONSOLE_PREFIX)
        self.console = Console(Source(rt.path, runtime=rt, operator=self), sessions) if console else None
        mounted = []
        if self.console is not None:
            mounted = [Mount(CONSOLE_PREFIX, app=self.console.asgi), Route("/", _to_console, methods=["GET"])]
        self.asgi = Starlette(
            routes=[
                *mounted,
                Route("/actors/{type}/{key}/{handler}", self.send, methods=["POST"]),
                Route("/actors", self.actors, methods=["GET"]),
                Route("/actors/{type}/{key}", self.actor, methods=["GET"]),
                Route("/actors/{type}/{key}/journal", self.journal, methods=["GET"]),
                Route("/actors/{type}/{key}/stream", self.stream, methods=["GET"]),
                Route("/actors/{type}/{key}/journal/{seq}", self.entry, methods=["GET"]),
                Route("/status", self.status, methods=["GET"]),
                Route("/health", self.health, methods=["GET"]),
                Route("/metrics", self.prometheus, methods=["GET"]),
                Route("/openapi.json", self.openapi_json, methods=["GET"]),
            ],
            exception_handlers={HTTPException: _http_error, Exception: _internal_error},
        )
        self.asgi.add_middleware(Guard, token=token, hosts=hosts, console=sessions if console else None)

    # -- sending -------------------------------------------------------------------

    async def send(self, request: Request) -> Response:
        """POST /actors/{type}/{key}/{handler}: ask (JSON reply) or, with ?wait=false, tell (202)."""
        answer = await self._send(request)
        return response(answer)

    async def _send(self, request: Request) -> Answer:
        address = f"{request.path_params['type']}/{request.path_params['key']}"
        try:
            desc, _ = self.rt.registry.resolve(address)
            self.rt.registry.handler_named(desc, request.path_params["handler"])
        except (UnknownActorTypeError, UnknownHandlerError) as exc:
            return error(404, "not_found", str(exc))
        key = request.headers.get("idempotency-key")
        if key is not None and not 0 < len(key) <= MAX_KEY:
            return error(400, "malformed", f"Idempotency-Key must be 1 to {MAX_KEY} characters")
        wait = _WAIT.get(request.query_params.get("wait", "true").lower())
        if wait is None:
            return error(400, "malformed", "wait must be true or false")
        durability = request.query_params.get("durability")
        if durability is not None and durability not in DURABILITIES:
            return error(
                400, "malformed", f"durability must be one of {', '.join(DURABILITIES)}, not {durability[:40]!r}"
            )
        if (durability or self.rt.durability) == "replicated" and self.rt.replication is None:
            return error(400, "malformed", "durability=replicated needs a server that replicates (serve --replicate)")
        body = await self._body(request)
        if isinstance(body, Answer):
            return body
        return await self.call(
            request, address, request.path_params["handler"], body, ask=wait, key=key, durability=durability
        )

    async def deliver(self, request: Request, address: str, handler: str, body: bytes, *, ask: bool) -> Answer:
        """A message from the console: validated, sent and answered as ``POST /actors/...`` would."""
        return await self.call(request, address, handler, body, ask=ask)

    async def call(
        self,
        request: Request,
        address: str,
        handler: str,
        body: bytes,
        *,
        ask: bool,
        key: str | None = None,
        durability: str | None = None,
    ) -> Answer:
        """Decode ``body`` as ``handler``'s message, ask (or tell) it, and answer what became of it."""
        try:
            desc, _ = self.rt.registry.resolve(address)
            info = self.rt.registry.handler_named(desc, handler)
        except (UnknownActorTypeError, UnknownHandlerError) as exc:
            return error(404, "not_found", str(exc))
        try:
            msg = msgspec.json.decode(body or b"{}", type=info.message_type)
        except msgspec.ValidationError as exc:
            return error(422, "invalid", f"{info.message_type.__qualname__}: {exc}")
        except msgspec.DecodeError as exc:
            return error(400, "malformed", f"the body is not JSON: {exc}")
        except RecursionError:
            return error(400, "malformed", "the body is nested too deeply")
        if self.closing or not self.rt.statistics().open:
            return error(503, "closed", "the server is shutting down: nothing was accepted; retry later")
        if ask:
            call: Coroutine[Any, Any, Any] = self.rt.ask(address, msg, durability=durability, idempotency_key=key)
        else:
            call = self.rt.tell(address, msg, durability=durability, idempotency_key=key)
        return await self._wait(request, call, address, key, ask=ask)

    async def _body(self, request: Request) -> bytes | Answer:
        length = request.headers.get("content-length")
        too_large = error(413, "too_large", f"the body is larger than {self.max_body} bytes")
        if (
            length is not None
            and length.isascii()
            and length.isdigit()
            and (len(length) > 12 or int(length) > self.max_body)
        ):
            return too_large
        chunks = []
        size = 0
        try:
            async for chunk in request.stream():
                chunks.append(chunk)
                size += len(chunk)
                if size > self.max_body:
                    return too_large
        except ClientDisconnect:
            return error(400, "malformed", "the client went away before sending its body")
        return b"".join(chunks)

    async def _wait(
        self, request: Request, call: Coroutine[Any, Any, Any], address: str, key: str | None, *, ask: bool
    ) -> Answer:
        """Run ``call`` and answer its outcome; stop waiting when the client goes or the server stops.

        Giving up the wait changes nothing for the message, which goes on (and
        may still run). Without a key the call is awaited here and the await is
        cancelled: the runtime then treats the ask's reply as unwanted, nothing
        else. Under a key the runtime shares the first call's future with
        concurrent calls of that key, which cancelling would cancel as well, so
        that call runs in a task of its own, left to finish.
        """
        loop = asyncio.get_running_loop()
        scope = anyio.CancelScope()
        gone: list[asyncio.Task[None]] = []

        def interrupt(_: object = None) -> None:
            scope.cancel()

        def watch() -> None:
            watcher = loop.create_task(_disconnected(request))
            watcher.add_done_callback(interrupt)
            gone.append(watcher)

        stop = self._stopping()
        stop.add_done_callback(interrupt)
        # Most calls finish within milliseconds: the client is watched only after that.
        watching = loop.call_later(WATCH_AFTER_S, watch)
        task = loop.create_task(call) if key is not None else None
        finished = False
        value: Any = None
        exc: Exception | None = None
        self.waiting += 1
        try:
            with scope:
                try:
                    value = await (asyncio.shield(task) if task is not None else call)
                except Exception as failure:
                    exc = failure
                finished = True
        finally:
            self.waiting -= 1
            watching.cancel()
            stop.remove_done_callback(interrupt)
            for watcher in gone:
                watcher.cancel()
        if not finished:
            if task is not None:
                self._abandoned.add(task)
                task.add_done_callback(_forget(self._abandoned))
            if gone and gone[0].done() and not gone[0].cancelled():
                log.info("%s: the client went away; the message goes on without it", address)
                return error(499, "gone", "the client went away")
            return await self._interrupted(address, key)
        if exc is None:
            return self._reply(value, address, ask=ask)
        if not isinstance(exc, SteleError):
            log.error("%s: unexpected error from the runtime", address, exc_info=exc)
        return outcome(exc, address=address, ask=ask)

    def _reply(self, value: Any, address: str, *, ask: bool) -> Answer:
        if not ask:
            return Answer(202, {"accepted": True, "address": address})
        try:
            encoded = msgspec.json.encode(value)
        except (TypeError, msgspec.EncodeError) as exc:
            return accepted(address, "reply_not_json", f"the handler ran; its reply cannot be sent as JSON: {exc}")
        return Answer(200, msgspec.Raw(encoded))

    async def _interrupted(self, address: str, key: str | None) -> Answer:
        """An ask or tell cut short by shutdown: accepted if its key is in the journal, else unknown."""
        if key is not None:

            def recorded() -> bool:
                with storage.Journal.open(self.rt.path) as journal:
                    return journal.idempotent(key) is not None

            try:
                if await anyio.to_thread.run_sync(recorded):
                    return accepted(
                        address, "shutdown", "the server stopped before the reply; the message is durably accepted "
                        "and runs (or ran) once; resend with the same Idempotency-Key after the restart for its reply"
                    )  # fmt: skip
            except storage.StorageError as exc:
                log.warning("%s: cannot read idempotency key back: %s", address, exc)
        return unknown(
            "the server stopped while the message was under way: it may or may not run after the restart; "
            "resend only with an Idempotency-Key"
        )

    def _stopping(self) -> asyncio.Future[None]:
        if self._stop is None:
            self._stop = asyncio.get_running_loop().create_future()
        return self._stop

    async def drain(self, grace: float) -> None:
        """Refuse new messages; give requests under way up to ``grace`` seconds to be answered."""
        self.closing = True
        if self.console is not None:
            self.console.close()  # its live pages end now: they would hold the server open
        with anyio.move_on_after(grace):
            while self.waiting:
                await anyio.sleep(0.05)

    def interrupt(self) -> None:
        """Answer whatever still waits as interrupted (after the runtime has closed)."""
        stop = self._stopping()
        if not stop.done():
            stop.set_result(None)

    # -- reading -------------------------------------------------------------------

    def _journal(self) -> storage.Journal:
        return storage.Journal.open(self.rt.path)

    async def actors(self, request: Request) -> Response:
        """GET /actors: every actor with its last position and status."""

        def read() -> list[Any]:
            with self._journal() as journal:
                return [_plain(a) for a in journal.actors(request.query_params.get("type"))]

        return _ok(await anyio.to_thread.run_sync(read))

    async def actor(self, request: Request) -> Response:
        """GET /actors/{type}/{key}: state (rebuilt from the journal), position, status."""
        address = f"{request.path_params['type']}/{request.path_params['key']}"
        try:
            desc, key = self.rt.registry.resolve(address)
        except UnknownActorTypeError as exc:
            return response(error(404, "not_found", str(exc)))

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
            return _ok(await anyio.to_thread.run_sync(read))
        except storage.UndecodableEntry as exc:
            return response(error(500, "undecodable", str(exc)))

    async def journal(self, request: Request) -> Response:
        """GET /actors/{type}/{key}/journal?from=&limit=: a page of the actor's entries."""
        address = f"{request.path_params['type']}/{request.path_params['key']}"
        start = _integer(request, "from", 0, 0, MAX_POSITION)
        limit = _integer(request, "limit", 100, 1, MAX_PAGE)
        if isinstance(start, Answer):
            return response(start)
        if isinstance(limit, Answer):
            return response(limit)

        def read() -> list[Any]:
            # Previews: a payload of any size lists from a bounded read of it (long
            # strings cut short, "truncated": true); GET .../journal/{seq} serves it whole.
            with self._journal() as journal:
                return [
                    {
                        "position": entry.position,
                        "seq": entry.seq,
                        "step": entry.step,
                        "kind": entry.kind,
                        "type": entry.type,
                        "at": entry.at,
                        "size": entry.size,
                        "truncated": entry.truncated,
                        "data": entry.data,
                    }
                    for entry in journal.entry_previews(address, start, None, limit)
                ]

        return _ok(await anyio.to_thread.run_sync(read))

    async def entry(self, request: Request) -> Response:
        """GET /actors/{type}/{key}/journal/{seq}: one entry's payload whole, as msgpack, streamed."""
        address = f"{request.path_params['type']}/{request.path_params['key']}"
        raw = request.path_params["seq"]
        if _INTEGER.fullmatch(raw) is None or not 0 <= int(raw) <= MAX_POSITION:
            return response(error(400, "malformed", f"seq must be an integer from 0 to {MAX_POSITION}"))
        seq = int(raw)

        def open_value() -> tuple[storage.Journal, storage.ValueReader | None]:
            journal = self._journal()
            try:
                return journal, journal.entry_value(address, seq)
            except BaseException:
                journal.close()
                raise

        journal, value = await anyio.to_thread.run_sync(open_value)
        if value is None:
            journal.close()
            return response(error(404, "not_found", f"no journal entry {address}#{seq}"))

        def pieces() -> Iterator[bytes]:
            # One chunk in memory at a time, however large the payload.
            try:
                yield from value.pieces()
            finally:
                journal.close()

        return StreamingResponse(
            pieces(), media_type="application/msgpack", headers={"Content-Length": str(value.size)}
        )

    async def stream(self, request: Request) -> Response:
        """GET /actors/{type}/{key}/stream: the actor's stream as server-sent events (see :mod:`._sse`).

        From after ``Last-Event-ID`` (a reconnection) or from ``?offset=N``
        (default 0); following live unless ``?follow=false``.
        """
        address = f"{request.path_params['type']}/{request.path_params['key']}"
        try:
            self.rt.registry.resolve(address)
        except UnknownActorTypeError as exc:
            return response(error(404, "not_found", str(exc)))
        start = _sse.parse_offset(
            request.headers.get("last-event-id"), request.query_params.get("offset"), MAX_POSITION
        )
        if isinstance(start, str):
            return response(error(400, "malformed", start))
        follow = _WAIT.get(request.query_params.get("follow", "true").lower())
        if follow is None:
            return response(error(400, "malformed", "follow must be true or false"))
        return StreamingResponse(
            _sse.events(self.rt, address, start, follow=follow),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def status(self, request: Request) -> Response:
        """GET /status: the runtime, its journal and replication (and, for a node, every node and its leases)."""
        body = {**runtime_status(self.rt, self.started), "http_waiting": self.waiting}
        if self.rt.node_options is not None:
            body["nodes"] = msgspec.to_builtins(await self._nodes())
        return _ok(body)

    async def _nodes(self) -> list[storage.NodeInfo]:
        """Every node of the shared database, with its leases and how many actors they cover."""
        nodes, _ = await anyio.to_thread.run_sync(storage.cluster_view, self.rt.path)
        self.nodes_seen = nodes
        return nodes

    async def health(self, request: Request) -> Response:
        """GET /health: 200 while the runtime accepts messages (open, and its journal takes commits).

        ``status`` is ``ok``, ``degraded`` (still 200: messages are accepted, but
        the backup is not what it should be; ``degraded`` says why) or ``failing`` (503).
        """
        figures = self.rt.statistics()
        failing = figures.journal_failing if figures.open else None
        ok = figures.open and failing is None and not self.closing
        degraded = degradations(figures)
        state = "failing" if not ok else "degraded" if degraded else "ok"
        body = {"ok": ok, "status": state, "journal_failing": failing, "degraded": degraded}
        return _ok(body, 200 if ok else 503)

    async def prometheus(self, request: Request) -> Response:
        """GET /metrics: Prometheus text format."""
        if self.rt.node_options is not None:
            try:
                await self._nodes()  # read here, off the loop: the collector only formats them
            except SteleError as exc:
                log.warning("metrics: cannot read the nodes: %s", exc)
        compaction = self.rt.statistics().compaction
        runs = compaction.runs if compaction is not None else 0
        if time.monotonic() - self._sizes_at >= SIZES_EVERY_S or runs != self._sizes_runs:
            # One pass over the whole journal: read in a thread, and not at every
            # scrape (but again after a compaction, which changes them).
            self._sizes_at, self._sizes_runs = time.monotonic(), runs
            self.sizes = await anyio.to_thread.run_sync(self.rt.store.history_sizes)
        return Response(generate_latest(self.metrics), media_type="text/plain; version=0.0.4")

    async def openapi_json(self, request: Request) -> Response:
        """GET /openapi.json: the OpenAPI description of this API."""
        return Response(self.openapi, media_type="application/json")


async def _to_console(request: Request) -> Response:
    return RedirectResponse(CONSOLE_PREFIX + "/", 303)


async def _disconnected(request: Request) -> None:
    """Return once the client has gone (the body was read before: nothing else comes)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _forget(tasks: set[asyncio.Task[Any]]) -> Any:
    def done(task: asyncio.Task[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the client it was for is gone

    return done


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kinds = {404: "not_found", 405: "method_not_allowed"}
    return response(error(exc.status_code, kinds.get(exc.status_code, "malformed"), exc.detail))


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return response(error(500, "internal", f"{type(exc).__qualname__}: {exc}"))


def runtime_status(rt: Runtime, started: float) -> dict[str, Any]:
    """What ``status`` reports about a running runtime."""
    path = rt.path
    stats = rt.statistics()
    postgres = storage.is_postgres(path)
    return {
        "journal": storage.redact(path) if postgres else os.path.abspath(path),
        "journal_bytes": None if postgres else _size(path),
        "wal_bytes": None if postgres else _size(path + "-wal"),
        "uptime_s": time.time() - started,
        **msgspec.to_builtins(stats),
        "commits": stats.writer.batches,
        "units": stats.writer.units,
    }


def _size(path: str) -> int:
    return os.path.getsize(path) if os.path.exists(path) else 0


def degradations(figures: RuntimeStatistics) -> list[str]:
    """What is wrong with the backup while messages are still accepted, in words (empty: nothing)."""
    found = []
    rep = figures.replication
    if rep is not None:
        if rep.stalled:
            found.append(
                f"replication stalled: the replica has not advanced for {rep.stalled_for_s:.1f} s; "
                f"{rep.commits_at_risk} commit(s) not in it, the oldest {rep.oldest_at_risk_s:.1f} s old"
            )
        if not rep.litestream_running:
            found.append(f"litestream is not running ({rep.last_error or 'no error reported'})")
    drills = figures.drill
    if drills is not None and not drills.last.ok:
        causes = ", ".join(sorted(drills.last.causes)) or "unknown"
        found.append(f"the last restore drill failed ({causes})")
    return found


class _Collector:
    """Runtime figures for Prometheus, read at scrape time (nothing on the hot path)."""

    def __init__(self, app: App) -> None:
        self.app = app

    def collect(self) -> Any:
        rt = self.app.rt
        figures = rt.statistics()
        writer = figures.writer
        yield CounterMetricFamily(
            "stele_commits", "Journal transactions committed (group commits)", value=writer.batches
        )
        yield CounterMetricFamily("stele_units", "Units of work committed (steps, tells, effects)", value=writer.units)
        yield CounterMetricFamily("stele_commit_seconds", "Time spent committing", value=writer.commit_seconds)
        yield GaugeMetricFamily("stele_active_actors", "Actors in memory", value=figures.active_actors)
        yield GaugeMetricFamily(
            "stele_journal_failing", "1 while journal commits fail (full disk, I/O errors)",
            value=0 if figures.journal_failing is None else 1,
        )  # fmt: skip
        yield GaugeMetricFamily("stele_mailbox_depth", "Messages waiting in mailboxes", value=figures.mailbox_depth)
        yield GaugeMetricFamily("stele_pending_messages", "Messages accepted, not yet processed", value=figures.pending)
        yield GaugeMetricFamily("stele_steps_in_flight", "Steps running or committing", value=figures.steps_in_flight)
        yield GaugeMetricFamily("stele_suspended_actors", "Actors suspended in memory", value=len(figures.suspended))
        yield GaugeMetricFamily("stele_pending_timers", "Durable timers pending", value=figures.timers)
        yield GaugeMetricFamily("stele_http_waiting", "HTTP requests waiting for the runtime", value=self.app.waiting)
        node = figures.node
        if node is not None:
            yield GaugeMetricFamily("stele_node_shards", "Shards this node holds a lease on", value=node.shards)
            yield GaugeMetricFamily("stele_node_live_nodes", "Live nodes at the last renewal", value=node.live_nodes)
            yield CounterMetricFamily("stele_node_shards_acquired", "Shards taken (over)", value=node.acquired)
            yield CounterMetricFamily("stele_node_shards_lost", "Shards lost to another node", value=node.lost)
            yield CounterMetricFamily("stele_node_remote_sent", "Messages sent to other nodes", value=node.remote_sent)
            yield CounterMetricFamily(
                "stele_node_remote_received", "Messages picked up from other nodes", value=node.remote_received
            )
            shards = GaugeMetricFamily("stele_nodes_shards", "Shards each node holds", labels=["node"])
            actors = GaugeMetricFamily("stele_nodes_actors", "Registered actors each node owns", labels=["node"])
            alive = GaugeMetricFamily("stele_nodes_alive", "1 while a node renews its leases", labels=["node"])
            for info in self.app.nodes_seen:
                shards.add_metric([info.id], info.shards)
                actors.add_metric([info.id], info.actors)
                alive.add_metric([info.id], 1 if info.alive else 0)
            yield shards
            yield actors
            yield alive
        status = rt.replication
        if status is not None:
            gauges = (
                ("stele_replication_commits_at_risk", "Commits not yet in the replica", status.commits_at_risk),
                ("stele_replication_oldest_at_risk_seconds", "Age of the oldest", status.oldest_at_risk_s),
                ("stele_litestream_running", "1 while Litestream runs", int(status.litestream_running)),
                ("stele_replication_stalled", "1 while the journal advances and the replica does not",
                 int(status.stalled)),
                ("stele_replication_stalled_seconds", "How long the replica has not advanced while commits wait",
                 status.stalled_for_s),
                ("stele_wal_bytes", "Size of the journal's WAL file", status.wal_bytes),
                ("stele_wal_max_bytes", "The bound the WAL is kept under (max_wal_bytes)", status.max_wal_bytes),
                ("stele_wal_over_bound", "1 while the WAL is over its bound and nothing could checkpoint it",
                 int(status.wal_over_bound)),
            )  # fmt: skip
            for name, text, value in gauges:
                yield GaugeMetricFamily(name, text, value=value)
            yield CounterMetricFamily(
                "stele_wal_truncations", "WAL checkpoints and truncations while Litestream was down",
                value=status.wal_truncations,
            )  # fmt: skip
        yield from _drill_metrics(figures)
        yield from _history_metrics(figures, self.app.sizes)


def _drill_metrics(figures: RuntimeStatistics) -> Any:
    """``stele_drill_*``: the last restore drill (nothing before the first)."""
    drills = figures.drill
    if drills is None:
        return
    last = drills.last
    yield CounterMetricFamily("stele_drill_runs", "Restore drills run", value=drills.runs)
    yield CounterMetricFamily("stele_drill_failures", "Restore drills that failed", value=drills.failures)
    yield GaugeMetricFamily("stele_drill_ok", "1 if the last restore drill passed", value=1 if last.ok else 0)
    yield GaugeMetricFamily(
        "stele_drill_last_run_timestamp_seconds", "When the last restore drill began", value=last.started_at
    )
    if drills.last_ok_at is not None:
        yield GaugeMetricFamily(
            "stele_drill_last_ok_timestamp_seconds", "When the last drill that passed began", value=drills.last_ok_at
        )
    yield GaugeMetricFamily("stele_drill_duration_seconds", "How long the last drill took", value=last.timings.total_s)
    yield GaugeMetricFamily(
        "stele_drill_behind_entries", "Journal entries the last drilled replica lacked", value=last.behind.entries
    )
    yield GaugeMetricFamily(
        "stele_drill_behind_seconds", "Age of the oldest entry the last drilled replica lacked",
        value=last.behind.seconds,
    )  # fmt: skip
    problems = GaugeMetricFamily("stele_drill_problems", "Problems the last drill found, by cause", labels=["cause"])
    counted: dict[str, int] = {}
    for problem in last.problems:
        counted[problem.cause] = counted.get(problem.cause, 0) + 1
    for cause, count in sorted(counted.items()):
        problems.add_metric([cause], count)
    yield problems


SIZES_EVERY_S = 30.0
"""How often /metrics reads every actor's history size (a pass over the journal)."""
LARGEST_ACTORS = 100
"""Per-actor size metrics for this many of the largest histories (the label's cardinality stays bounded)."""


def _history_metrics(figures: RuntimeStatistics, sizes: list[storage.HistorySize]) -> Any:
    """``stele_actor_journal_*`` for the largest histories, and ``stele_compaction_*`` after the first compaction."""
    largest = sorted(sizes, key=lambda s: s.bytes + s.snapshot_bytes, reverse=True)[:LARGEST_ACTORS]
    entries = GaugeMetricFamily(
        "stele_actor_journal_entries", "Journal entries an actor's history holds", labels=["actor"]
    )
    size = GaugeMetricFamily(
        "stele_actor_journal_bytes", "Payload bytes of an actor's entries and snapshots", labels=["actor"]
    )
    for s in largest:
        entries.add_metric([s.address], s.entries)
        size.add_metric([s.address], s.bytes + s.snapshot_bytes)
    yield entries
    yield size
    compaction = figures.compaction
    if compaction is None:
        return
    last = compaction.last
    yield CounterMetricFamily("stele_compaction_runs", "Compactions run", value=compaction.runs)
    yield GaugeMetricFamily(
        "stele_compaction_last_timestamp_seconds", "When the last compaction ended", value=compaction.last_at
    )
    yield GaugeMetricFamily(
        "stele_compaction_removed_entries", "Journal entries the last compaction removed", value=last.entries
    )
    yield GaugeMetricFamily(
        "stele_compaction_reclaimed_bytes", "Bytes the last compaction gave back to the file system",
        value=max(0, last.bytes_before - last.bytes_after),
    )  # fmt: skip
    yield GaugeMetricFamily("stele_journal_free_bytes", "Journal storage free for reuse", value=last.free_after)
