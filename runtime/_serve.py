"""``python -m runtime serve``: a module's actors behind HTTP, with embedded defaults."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
from typing import Any

import anyio
import uvicorn

from actors import SteleError

from ._http import App
from ._modules import actor_classes, load_module
from ._runtime import Runtime

log = logging.getLogger("stele.serve")


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise SteleError(f"--http wants HOST:PORT, not {value!r}")
    return host or "127.0.0.1", int(port)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def serve(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; in-flight steps finish, Litestream stops last."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host, port = _host_port(args.http)
    if not _loopback(host) and not args.token:
        raise SteleError(f"refusing to listen on {host} without --token: only loopback is served without auth")
    module_name = os.path.abspath(args.module) if args.module.endswith(".py") else args.module
    classes = actor_classes(load_module(args.module))
    replicate = None if args.no_replicate else (args.replicate or os.path.abspath(args.db) + "-replica")
    stopping = anyio.Event()

    # uvicorn catches SIGINT/SIGTERM while serving and raises them again once it
    # has stopped; these handlers make that second delivery harmless, so the
    # runtime below still closes (steps finish, Litestream stops last).
    def on_signal(signum: int, frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    async with Runtime(
        args.db,
        actors=classes,
        durability=args.durability,
        replicate=replicate,
        restore_if_missing=replicate is not None,
    ) as rt:
        app = App(rt, token=args.token)
        server = uvicorn.Server(uvicorn.Config(app.asgi, host=host, port=port, log_level="warning", lifespan="off"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve)
            while not server.started:
                if server.should_exit:
                    raise SteleError(f"cannot listen on {host}:{port}")
                await anyio.sleep(0.01)
            bound = server.servers[0].sockets[0].getsockname()[1]
            await rt.annotate("module", module_name)
            await rt.annotate("http", f"{host}:{bound}")
            log.info("journal %s", os.path.abspath(args.db))
            log.info("replica %s", replicate or "none (--no-replicate)")
            if rt.litestream_socket is None and replicate is not None:
                log.info("litestream log %s", os.path.abspath(args.db) + "-litestream.log")
            log.info("actors %s", ", ".join(sorted(rt.registry.actors)))
            print(f"listening on http://{host}:{bound}", flush=True)
            await stopping.wait()
            log.info("stopping: finishing in-flight steps, then Litestream")
            server.should_exit = True
    return 0
