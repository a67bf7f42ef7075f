"""``python -m runtime serve``: a module's actors behind HTTP, with embedded defaults.

Stopping (SIGINT or SIGTERM) is bounded: the listener closes and new messages
are refused; requests under way get ``DRAIN_S`` to be answered; then the
runtime closes (in-flight steps get its ``grace``) and answers every ask still
waiting with what is true of it (accepted and durable: 202; never accepted:
503; may or may not: 504, see :mod:`runtime._http_outcomes`); whatever is still
waiting after that is answered as interrupted, uvicorn gives up on what is left
after ``HTTP_GRACE_S``, and Litestream stops last, after a final sync.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import signal
from collections.abc import Iterator

import anyio
import uvicorn

import storage
from actors import SteleError

from .._cluster import NodeOptions
from .._runtime import Runtime
from ._drill import drill_every as drills
from ._history import compact_every as compacting
from ._hosts import loopback, split_host, wildcard
from ._http import App
from ._http_guard import LOOPBACK_NAMES
from ._modules import actor_classes, load_module
from ._text import plain
from ._token import token_from

log = logging.getLogger("stele.serve")

DRAIN_S = 5.0
"""How long requests under way may still be answered normally once stopping."""
HTTP_GRACE_S = DRAIN_S + 20.0
"""After this, uvicorn cancels whatever request is still running (the runtime's
grace and Litestream's final upload come between)."""


def host_port(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as the host to bind and the port."""
    parts = split_host(value)
    if parts is None or not parts[1]:
        raise SteleError(f"--http wants HOST:PORT, not {value!r}")
    host, port = parts
    return host.removeprefix("[").removesuffix("]"), int(port)


def allowed_hosts(host: str, allow: list[str]) -> frozenset[str] | None:
    """The Host names to accept: loopback names and ``allow`` on a loopback bind or with ``allow``."""
    extra = {name.strip().lower() for name in allow}
    for name in extra:
        if not name or split_host(name) != (name, ""):
            raise SteleError(f"--allow-host wants a host name without port, not {name!r}")
    if not loopback(host) and not extra:
        return None
    return LOOPBACK_NAMES | extra


class PlainFormatter(logging.Formatter):
    """Log lines quote addresses and errors that clients chose: their control characters are escaped."""

    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(plain(line) for line in super().format(record).split("\n"))


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: ``serve`` decides how stopping goes."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM, then stop within a bounded time (see the module docstring)."""
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
    if args.token is not None:
        log.warning("--token is visible to every user of this machine (ps); prefer --token-file or STELE_TOKEN")
    hosts = allowed_hosts(host, args.allow_host or [])
    postgres = storage.is_postgres(args.db)
    if postgres and args.replicate:
        raise SteleError("--replicate is for SQLite journals: a PostgreSQL database's replication is the server's")
    replicate = (
        None if args.no_replicate or postgres else (args.replicate or os.path.abspath(args.db) + "-replica")
    )
    if args.durability == "replicated" and replicate is None and not postgres:
        raise SteleError("--durability replicated needs replication: drop --no-replicate")
    journal = storage.redact(args.db) if postgres else os.path.abspath(args.db)
    drill_every = getattr(args, "drill_every", None)
    if drill_every is not None and postgres:
        raise SteleError("--drill-every drills a Litestream replica: a PostgreSQL database's backups are the server's")
    if drill_every is not None and replicate is None:
        raise SteleError("--drill-every drills the replica: drop --no-replicate")
    node = None
    if getattr(args, "node", None) is not None:
        if not postgres:
            raise SteleError("--node shares a postgresql:// database between serve processes; a file has one owner")
        node = NodeOptions(name=args.node or None, lease_s=args.lease, http=args.http)
    module_name = os.path.abspath(args.module) if args.module.endswith(".py") else args.module
    classes = actor_classes(load_module(args.module))
    # Installed before anything starts, so an early signal stops the server cleanly
    # too; signals after the first are ignored: stopping is bounded already.
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with Runtime(
            args.db,
            actors=classes,
            durability=args.durability,
            replicate=replicate,
            restore_if_missing=replicate is not None,
            node=node,
        ) as rt:
            app = App(rt, token=token, hosts=hosts)
            config = uvicorn.Config(
                app.asgi,
                host=host,
                port=port,
                log_level="warning",
                lifespan="off",
                timeout_graceful_shutdown=int(HTTP_GRACE_S),
            )
            server = QuietServer(config)
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
                await rt.annotate("module", module_name)
                await rt.annotate("http", f"{shown}:{bound}")
                if replicate is not None:
                    await rt.annotate("replica", replicate)  # where `drill` finds it
                if drill_every is not None and replicate is not None:
                    tg.start_soon(
                        functools.partial(
                            drills,
                            rt,
                            drill_every,
                            module=module_name,
                            replica=replicate,
                            server=f"http://{'[::1]' if ':' in host else '127.0.0.1'}:{bound}"
                            if wildcard(host) else f"http://{shown}:{bound}",
                            token=token,
                        )
                    )
                compact_every = getattr(args, "compact_every", None)
                if compact_every is not None:
                    tg.start_soon(compacting, rt, compact_every)
                log.info("journal %s", journal)
                log.info("replica %s", replicate or ("the server's" if postgres else "none (--no-replicate)"))
                if rt.litestream_socket is None and replicate is not None:
                    log.info("litestream log %s", os.path.abspath(args.db) + "-litestream.log")
                log.info("actors %s", ", ".join(sorted(rt.registry.actors)))
                print(f"listening on http://{shown}:{bound}", flush=True)
                await stop.wait()
                log.info("stopping: answering requests under way, finishing in-flight steps, then Litestream")
                server.should_exit = True
                await app.drain(DRAIN_S)
                await rt.close()  # answers every ask still waiting; Litestream stops last
                app.interrupt()  # anything left (a wait on the journal) is answered as interrupted
                await served.wait()  # within HTTP_GRACE_S: uvicorn cancels what is left then
                tg.cancel_scope.cancel()  # the signal watcher
    return 0
