"""An actor's stream over HTTP (server-sent events) and from the command line: every item
exactly once and in order, resumed by ``Last-Event-ID`` or ``?offset=``, followed live, and
across kill -9 of the server with the attempt that starts over marked."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import msgspec
import pytest

from actors import SteleError
from runtime import Runtime, stream_item
from runtime.interfaces._sse import follow, read_events
from storage import Journal

from .histories import STALL_S, reap
from .report import add
from .served import ROOT, Server, cli, raw_request, request
from .stream_models import Write, Writer
from .test_http import http_app

CYCLES = int(os.environ.get("STELE_STREAM_KILL_CYCLES", "12"))
"""Kill cycles of the fast tier; ``--long`` runs ``LONG_SCALE`` times as many."""
WORDS = 30
"""Words per streamed answer in the kill test (one every 20 ms)."""


def text(count: int) -> str:
    return "".join(f"w{i} " for i in range(count))


def journal_items(db: str, address: str) -> list[dict[str, Any]]:
    """The actor's stream as the journal holds it, as readers get it."""
    with Journal.open(db) as journal:
        found, offset = [], 0
        while page := journal.stream_entries(address, offset, 500):
            found += [msgspec.to_builtins(stream_item(e)) for e in page]
            offset = page[-1].seq + 1
    return found


def sse(base: str, path: str, headers: list[tuple[str, str]] = []) -> tuple[int, dict[str, str], Any]:  # noqa: B006
    """GET an SSE endpoint that ends (``follow=false``): status, headers, ``(id, event, data)`` of each event."""
    host = base.removeprefix("http://")
    status, answer_headers, body = raw_request(base, "GET", path, [("Host", host), *headers])
    if status != 200:
        return status, answer_headers, body
    lines = iter(line.encode() + b"\n" for line in str(body).split("\n"))
    return status, answer_headers, [(i, e, json.loads(d)) for i, e, d in read_events(lines)]


# -- the endpoint ------------------------------------------------------------------------------


async def test_the_endpoint_sends_each_item_with_its_offset_as_id_and_resumes_after_last_event_id(db: str) -> None:
    async with Runtime(db, actors=[Writer]) as rt, http_app(rt) as base:
        await rt.ask("Writer/a", Write(5))
        await rt.ask("Writer/a", Write(2, tag="b"))
        expected = [msgspec.to_builtins(i) async for i in rt.stream("Writer/a", follow=False)]
        path = "/actors/Writer/a/stream?follow=false"
        status, headers, events = await anyio.to_thread.run_sync(sse, base, path)
        assert status == 200 and headers["content-type"].startswith("text/event-stream")
        assert [data for _, _, data in events] == expected
        assert [(int(i), e) for i, e, _ in events] == [(item["offset"], item["kind"]) for item in expected]
        assert [item["kind"] for item in expected] == ["start", *["chunk"] * 5, "end", "start", "chunk", "chunk", "end"]
        for cut, item in enumerate(expected):
            after = [("Last-Event-ID", str(item["offset"]))]
            _, _, resumed = await anyio.to_thread.run_sync(sse, base, path, after)
            assert [data for _, _, data in resumed] == expected[cut + 1 :]
            _, _, started = await anyio.to_thread.run_sync(sse, base, f"{path}&offset={item['offset']}")
            assert [data for _, _, data in started] == expected[cut:]
        # A browser reconnecting keeps the URL's ?offset and sends Last-Event-ID: the header wins.
        _, _, both = await anyio.to_thread.run_sync(sse, base, f"{path}&offset=0", [("Last-Event-ID", "3")])
        assert [data["offset"] for _, _, data in both] == [i["offset"] for i in expected if i["offset"] > 3]


async def test_bad_offsets_and_unknown_actor_types_are_refused_by_name(db: str) -> None:
    async with Runtime(db, actors=[Writer]) as rt, http_app(rt) as base:
        await rt.ask("Writer/a", Write(1))
        for path, headers, status, words in [
            ("/actors/Writer/a/stream?offset=-1", [], 400, "offset must be an integer"),
            ("/actors/Writer/a/stream?offset=x", [], 400, "offset must be an integer"),
            ("/actors/Writer/a/stream?offset=99999999999999999999", [], 400, "offset must be an integer"),
            ("/actors/Writer/a/stream", [("Last-Event-ID", "seven")], 400, "Last-Event-ID must be an integer"),
            ("/actors/Writer/a/stream?follow=maybe", [], 400, "follow must be true or false"),
            ("/actors/Nobody/a/stream", [], 404, "Nobody"),
        ]:
            got, _, body = await anyio.to_thread.run_sync(sse, base, path, headers)
            assert got == status and words in body["message"], (path, body)
        _, _, empty = await anyio.to_thread.run_sync(sse, base, "/actors/Writer/nobody/stream?follow=false")
        assert empty == []


async def test_a_follower_over_http_gets_the_stream_live_exactly_once(db: str) -> None:
    async with Runtime(db, actors=[Writer]) as rt, http_app(rt) as base:
        url = f"{base}/actors/Writer/a/stream"
        got: list[dict[str, Any]] = []

        def read() -> None:
            for item in follow(lambda: url, reconnect_for=20):
                got.append(item)
                if item["kind"] == "end":
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, read)
            await rt.tell("Writer/a", Write(20, pace=0.005))
        assert got == [msgspec.to_builtins(i) async for i in rt.stream("Writer/a", follow=False)]
        assert got[-1]["value"] == text(20)


async def test_a_client_whose_server_is_gone_for_good_gives_up_after_reconnect_for(db: str) -> None:
    async with Runtime(db, actors=[Writer]) as rt:
        await rt.ask("Writer/a", Write(3))
        async with http_app(rt) as base:
            url = f"{base}/actors/Writer/a/stream"
            status, _, events = await anyio.to_thread.run_sync(sse, base, "/actors/Writer/a/stream?follow=false")
            assert status == 200 and len(events) == 5
        # The server is gone: the client reconnects (and, here, gives up: nothing listens any more).
        got: list[dict[str, Any]] = []

        def read() -> None:
            got.extend(follow(lambda: url, reconnect_for=0.5))

        with pytest.raises(SteleError, match="cannot reach"):
            await anyio.to_thread.run_sync(read)
        assert got == []


# -- the command line -----------------------------------------------------------------------


async def test_the_stream_command_reads_the_journal_or_a_server_and_prints_text_with_markers(db: str) -> None:
    async with Runtime(db, actors=[Writer]) as rt:
        await rt.ask("Writer/a", Write(4))
        expected = [msgspec.to_builtins(i) async for i in rt.stream("Writer/a", follow=False)]
    # No server recorded in the journal: the file itself.
    done = await anyio.to_thread.run_sync(lambda: cli("stream", "Writer/a", "--db", db, "--json"))
    assert [json.loads(line) for line in done.stdout.splitlines()] == expected
    done = await anyio.to_thread.run_sync(lambda: cli("stream", "Writer/a", "--db", db, "--offset", "3", "--json"))
    assert [json.loads(line) for line in done.stdout.splitlines()] == [i for i in expected if i["offset"] >= 3]
    shown = await anyio.to_thread.run_sync(lambda: cli("stream", "Writer/a", "--db", db))
    assert shown.stdout == text(4) + "\n\n"
    async with Runtime(db, actors=[Writer]) as rt, http_app(rt) as base:
        # A server: the command follows it until the stream's end, from the live answer.
        def until_end() -> subprocess.CompletedProcess[str]:
            return cli("stream", "Writer/b", "--url", base, "--until-end", "--json")

        async with anyio.create_task_group() as tg:
            result: list[subprocess.CompletedProcess[str]] = []
            tg.start_soon(lambda: _collect(result, until_end))
            await rt.tell("Writer/b", Write(10, pace=0.01))
        lines = [json.loads(line) for line in result[0].stdout.splitlines()]
        assert lines == [msgspec.to_builtins(i) async for i in rt.stream("Writer/b", follow=False)]
    refused = await anyio.to_thread.run_sync(lambda: cli("stream", "nonsense", "--db", db, check=False))
    assert refused.returncode == 2 and "not an actor address" in refused.stderr


async def _collect(into: list[Any], fn: Any) -> None:
    into.append(await anyio.to_thread.run_sync(fn))


# -- kill -9 ---------------------------------------------------------------------------------


class Reader:
    """``python -m runtime stream ADDRESS --follow --json`` in a child, its lines collected as they come.

    It finds the server from the journal, as a user's would, and asks again at
    each reconnection: a restarted server listens on another port.
    """

    def __init__(self, db: str, address: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runtime", "stream", address, "--db", db, "--follow", "--json",
             "--reconnect-for", str(STALL_S)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.items: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.lock:
                self.items.append(json.loads(line))

    def seen(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.items)

    def wait_for(self, predicate: Any, what: str) -> list[dict[str, Any]]:
        deadline = time.monotonic() + STALL_S
        while not predicate(items := self.seen()):
            assert self.proc.poll() is None, f"the reader exited: {self.proc.stderr.read() if self.proc.stderr else ''}"
            assert time.monotonic() < deadline, f"still waiting for {what}; the reader has {len(items)} item(s)"
            time.sleep(0.01)
        return items

    def stop(self) -> None:
        reap(self.proc)
        self.thread.join(timeout=STALL_S)


@pytest.fixture
def reader_and_servers() -> Iterator[list[Any]]:
    started: list[Any] = []
    yield started
    for thing in started:
        if isinstance(thing, Reader):
            thing.stop()
        else:
            thing.kill()


def test_kill9_while_streaming_a_following_reader_gets_every_item_once_with_restart_markers(
    tmp_path: Path, scale: int, reader_and_servers: list[Any]
) -> None:
    cycles = CYCLES * scale
    db, trace = str(tmp_path / "journal.db"), str(tmp_path / "calls.txt")
    env = {"STELE_STREAM_TRACE": trace}
    rng = random.Random(int(os.environ.get("STELE_KILL_SEED", "14")))

    def serve() -> Server:
        server = Server(db, "--no-replicate", module="tests.stream_models", env=env)
        reader_and_servers.append(server)
        return server

    server = serve()
    reader = Reader(db, "Writer/k")
    reader_and_servers.append(reader)
    told, before = 0, -1
    for _ in range(cycles):
        status, _ = request(f"{server.url}/actors/Writer/k/write?wait=false", {"words": WORDS, "pace": 0.02})
        assert status == 202
        told += 1
        # Kill while a message streams that has not been cut twice yet (a message under way
        # at five stops becomes a dead letter): once the reader sees a chunk this server
        # journaled (an offset past everything committed before it started).
        reader.wait_for(
            lambda items, before=before: any(
                i["kind"] == "chunk" and i["attempt"] <= 2 and i["offset"] > before for i in items
            ),
            "a chunk of this server's stream",
        )
        time.sleep(rng.uniform(0, 0.15))
        server.proc.send_signal(signal.SIGKILL)
        server.kill()
        before = max((i["offset"] for i in journal_items(db, "Writer/k")), default=-1)
        server = serve()

    ends = reader.wait_for(lambda items: sum(i["kind"] == "end" for i in items) == told, "every answer's end")
    assert server.stop() == 0
    got = reader.seen()
    assert got == ends  # nothing after the last end
    reader.stop()

    # Exactly once, in order: what the reader got is the journal's stream, item for item.
    assert got == journal_items(db, "Writer/k")
    offsets = [i["offset"] for i in got]
    assert offsets == sorted(set(offsets))
    # Each answer: attempts in order, each after the first marked as starting over, each
    # attempt's chunks the answer's words from the first, the last attempt complete.
    restarts = 0
    by_step: dict[int, list[dict[str, Any]]] = {}
    for item in got:
        by_step.setdefault(item["step"], []).append(item)
    assert len(by_step) == told
    for items in by_step.values():
        attempt = 0
        for item in items:
            if item["kind"] in ("start", "restart"):
                attempt += 1
                assert item["attempt"] == attempt and item["kind"] == ("start" if attempt == 1 else "restart")
                restarts += attempt > 1
                words = 0
            elif item["kind"] == "chunk":
                assert item["attempt"] == attempt and item["value"] == f"w{words} "
                words += 1
        assert items[-1]["kind"] == "end" and items[-1]["value"] == text(WORDS) and words == WORDS
        assert [i["kind"] for i in items].count("end") == 1
    assert restarts >= 1, "no kill cut a stream: the test proves nothing"
    # The model was called once per attempt, never for a stream the journal had recorded.
    with open(trace) as calls:
        assert len(calls.read().splitlines()) == sum(i["kind"] in ("start", "restart") for i in got)
    add("kill -9 while streaming (a following reader)", cycles=cycles, answers=told, items=len(got), restarts=restarts)
