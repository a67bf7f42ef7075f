"""``python -m runtime ui --db FILE_OR_URL``: the console, read-only, over any journal file.

No runtime: the file is opened read-only (it may be served by a runtime in
another process meanwhile, whose new entries then appear live), or restored
first from a replica into a temporary file. The same guard as ``serve``: on
loopback without a token; anywhere else only with one.
"""

from __future__ import annotations

import argparse
import logging
import signal

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route

import storage
from actors import SteleError

from .._registry import Registry
from ._hosts import loopback
from ._http_guard import Guard
from ._modules import actor_classes, load_module
from ._serve import PlainFormatter, QuietServer, allowed_hosts, host_port
from ._sql import is_replica, local_journal
from ._token import token_from
from .console import Console, Sessions, Source

log = logging.getLogger("stele.ui")

PREFIX = "/ui"


def app(source: Source, *, token: str | None, hosts: frozenset[str] | None) -> tuple[Starlette, Console]:
    """The console over ``source`` at ``/ui``, behind the guard."""
    sessions = Sessions(token, prefix=PREFIX)
    console = Console(source, sessions, prefix=PREFIX)

    async def home(request: Request) -> Response:
        return RedirectResponse(PREFIX + "/", 303)

    asgi = Starlette(routes=[Mount(PREFIX, app=console.asgi), Route("/", home, methods=["GET"])])
    asgi.add_middleware(Guard, token=token, hosts=hosts, console=sessions)
    return asgi, console


async def ui(args: argparse.Namespace) -> int:
    """Serve the console over ``--db`` until SIGINT or SIGTERM."""
    handler = logging.StreamHandler()
    handler.setFormatter(PlainFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    host, port = host_port(args.http)
    token = token_from(args)
    if not loopback(host) and not token:
        raise SteleError(
            f"refusing to listen on {host} without a token (--token-file, STELE_TOKEN or --token): "
            "only loopback is served without auth"
        )
    hosts = allowed_hosts(host, args.allow_host or [])
    registry = Registry(actor_classes(load_module(args.module))) if args.module else None
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals, local_journal(args.db) as path:
        storage.Journal.open(path).close()  # not a journal, or a newer one: said now, not on the first page
        source = Source(path, registry=registry, origin=args.db if is_replica(args.db) else None)
        asgi, console = app(source, token=token, hosts=hosts)
        server = QuietServer(uvicorn.Config(asgi, host=host, port=port, log_level="warning", lifespan="off"))
        stop = anyio.Event()
        served = anyio.Event()

        async def run() -> None:
            try:
                await server.serve()
            finally:
                served.set()
                stop.set()

        async def on_signal() -> None:
            async for signum in signals:
                log.info("%s received", signal.Signals(signum).name)
                stop.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            tg.start_soon(on_signal)
            while not server.started:
                if server.should_exit or stop.is_set():
                    raise SteleError(f"cannot listen on {host}:{port}")
                await anyio.sleep(0.01)
            bound = server.servers[0].sockets[0].getsockname()[1]
            shown = f"[{host}]" if ":" in host else host
            restored = f", restored from {args.db}" if path != args.db else ""
            log.info("journal %s (read-only)%s", source.shown, restored)
            print(f"listening on http://{shown}:{bound}", flush=True)
            log.info("console at http://%s:%s%s/", shown, bound, PREFIX)
            await stop.wait()
            log.info("stopping: live pages end, then the server")
            console.close()  # live pages end: they would hold the server open
            server.should_exit = True
            await served.wait()
            tg.cancel_scope.cancel()  # the signal watcher
    return 0
