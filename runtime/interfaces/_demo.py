"""``python -m runtime demo``: the example agents, driven over HTTP, killed and
recovered in the middle, then inspected and replayed."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.rule import Rule

import storage
from actors import SteleError

from ._client import call, endpoint
from ._sse import follow
from ._text import console, plain

AGENTS = "runtime.interfaces.demo_agents"
"""The demo's agents: a module inside the package, so the demo works from an installed wheel."""


def _http(url: str, body: Any = None) -> tuple[int, Any]:
    """GET ``url``, or POST ``body`` as JSON; a server that went away is status 0 and why."""
    try:
        return call(url, token=None, body=json.dumps(body).encode() if body is not None else None)
    except SteleError as exc:
        return 0, str(exc)


class _Server:
    def __init__(self, db: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runtime", "serve", AGENTS, "--db", db, "--http", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise SteleError("the demo server did not start")
        self.url = line.split()[-1]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._close()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(90)
        self._close()

    def _close(self) -> None:
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _fresh(db: str) -> None:
    for suffix in ("", "-wal", "-shm", "-owner", "-litestream.yml", "-litestream.log"):
        if os.path.exists(db + suffix):
            os.remove(db + suffix)
    shutil.rmtree(db + "-replica", ignore_errors=True)
    shutil.rmtree(os.path.join(os.path.dirname(db), "." + os.path.basename(db) + "-litestream"), ignore_errors=True)


def demo(args: argparse.Namespace) -> int:
    """Run the scenario; leave the journal for the inspection commands."""

    db = os.path.abspath(args.db)
    _fresh(db)
    tool_log = db + "-tool-calls.log"
    if os.path.exists(tool_log):
        os.remove(tool_log)
    env = {**os.environ, "STELE_DEMO_TOOL_LOG": tool_log}
    agent = "ResearchAgent/ada"

    console.print(Rule("Stele demo: a research agent, a librarian, one journal"))
    server = _Server(db, env)
    console.print(plain(f"serving {AGENTS} at {server.url}; journal {db}; replica {db}-replica"))
    status, answer = _http(f"{server.url}/actors/{agent}/research", {"question": "Why is the sky blue?"})
    console.print(plain(f"ask  research 'Why is the sky blue?'       -> {status} {answer!r}"))
    status, answer = _http(f"{server.url}/actors/{agent}/research?wait=false", {"question": "What is a durable actor?"})
    console.print(plain(f"tell research 'What is a durable actor?'   -> {status} {answer}"))
    status, answer = _http(f"{server.url}/actors/{agent}/research", {"question": 42})
    console.print(plain(f"ask  research with a number as question  -> {status} {answer['message']}"))

    _wait_answered(server.url, agent, "What is a durable actor?")  # the tell's answer: the reader sees the next one
    console.print(Rule("a crash in the middle of a streamed answer"))
    question = "How do agents survive crashes?"
    slow = {"question": question, "depth": 2}
    current = {"url": server.url}

    def stream_url() -> str:
        return endpoint(current["url"], "actors", *agent.split("/"), "stream")

    reader = _Reader(stream_url, _stream_end(stream_url()))
    console.print(plain(f"following GET {stream_url().removeprefix(server.url)} (server-sent events):"))
    outcome: dict[str, Any] = {}
    caller = threading.Thread(target=lambda: outcome.update(reply=_http(f"{server.url}/actors/{agent}/research", slow)))
    caller.start()
    reader.wait(lambda items: sum(i["kind"] == "chunk" for i in items) >= 8, "the model's first tokens")
    server.kill()
    caller.join()
    time.sleep(0.3)  # the tokens already on their way to the reader are printed first
    reader.say(f"[the server was SIGKILLed in the middle of the answer; the caller saw: {outcome['reply'][1]!r}]")
    server = _Server(db, env)
    current["url"] = server.url
    reader.say(f"[restarted at {server.url}: the interrupted step resumes from its journal; the reader reconnects]")
    reader.wait(lambda items: bool(items) and items[-1]["kind"] == "end", "the end of the answer")
    restarts = [i for i in reader.items if i["kind"] == "restart"]
    chunks = [i["offset"] for i in reader.items if i["kind"] == "chunk"]
    console.print(
        plain(
            f"the reader got {len(chunks)} tokens, each once and in order (offsets {chunks[0]}..{chunks[-1]}), "
            f"and {len(restarts)} marker(s) that an attempt started over: the cut answer is never spliced"
        )
    )
    body = _wait_answered(server.url, agent, question)
    console.print(plain(f"answer recorded after recovery: {body['state']['answers'][question]!r}"))
    calls: dict[str, int] = {}
    for line in Path(tool_log).read_text().splitlines():
        query = line.split(" ", 1)[1]
        calls[query] = calls.get(query, 0) + 1
    for query, count in calls.items():
        console.print(plain(f"search tool calls for {query!r}: {count}  (journaled once: never called again)"))
    status, shelf = _http(f"{server.url}/actors/Librarian/main/catalogue", {})
    console.print(plain(f"the librarian's catalogue (sent exactly once per answer): {shelf}"))

    console.print(Rule(f"what the journal recorded for {agent}: its effects (every token is an entry too)"))
    _cli(["history", agent, "--db", db, "--kind", "effect"])
    console.print(Rule("replication"))
    status, info = _http(f"{server.url}/status")
    rep = info.get("replication") or {}
    oldest = rep.get("oldest_at_risk_s", 0.0)
    console.print(
        plain(
            f"{rep.get('commits_at_risk')} commit(s) not yet in the replica, oldest {oldest:.2f} s; "
            f"litestream {'running' if rep.get('litestream_running') else 'down'}; replica {rep.get('url')}"
        )
    )
    server.stop()
    console.print(Rule("replay: today's code against the recorded history"))
    _cli(["replay", AGENTS, "--db", db])
    with storage.Journal.open(db) as journal:
        entries = sum(a.last_seq for a in journal.actors())
    console.print(Rule())
    console.print(plain(f"{entries} journal entries kept in {db}. Try:"))
    console.print(plain(f"  python -m runtime history {agent} --db {db}"))
    console.print(plain(f"  python -m runtime stream {agent} --db {db}"))
    console.print(plain(f"  python -m runtime state {agent} --db {db} --at 5 --module {AGENTS}"))
    console.print(plain(f"  python -m runtime actors --db {db}"))
    return 0


def _wait_answered(url: str, agent: str, question: str) -> Any:
    """The agent's state once it has answered ``question``."""
    deadline = time.monotonic() + 60
    while True:
        status, body = _http(f"{url}/actors/{agent}")
        if status == 200 and question in body["state"]["answers"]:
            return body
        if time.monotonic() > deadline:
            raise SteleError(f"the agent did not answer {question!r}")
        time.sleep(0.1)


def _stream_end(url: str) -> int:
    """The offset after the last item the stream holds now: a reader from there sees only what comes next."""
    last = -1
    for item in follow(lambda: url, keep_following=False, reconnect_for=10):
        last = item["offset"]
    return last + 1


class _Reader:
    """Follows the agent's stream through the stream endpoint, printing the tokens as they come.

    Reconnects from its last event id when the server goes away; ``url`` gives
    the server of the moment (a restarted one listens on another port).
    """

    def __init__(self, url: Callable[[], str], offset: int) -> None:
        self.items: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, args=(url, offset), daemon=True)
        self._thread.start()

    def _run(self, url: Callable[[], str], offset: int) -> None:
        try:
            for item in follow(url, offset, reconnect_for=60):
                kind = item["kind"]
                with self._lock:
                    if kind == "start":
                        _write(f"  {item['effect']}: ")
                    elif kind == "restart":
                        _write(f"\n  {item['effect']}, attempt {item['attempt']} starts over: ")
                    elif kind == "chunk":
                        _write(plain(item["value"]))
                    elif kind == "end":
                        _write("\n")
                    self.items.append(item)
                if kind == "end":
                    return
        except SteleError as exc:
            self.error = exc

    def say(self, line: str) -> None:
        """A line of the demo's own, between the reader's tokens."""
        with self._lock:
            _write(f"\n{plain(line)}\n")

    def wait(self, done: Callable[[list[dict[str, Any]]], bool], what: str) -> None:
        deadline = time.monotonic() + 60
        while not done(list(self.items)):
            if self.error is not None or time.monotonic() > deadline:
                raise SteleError(f"the stream reader never saw {what}: {self.error or 'timed out'}")
            time.sleep(0.02)


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _cli(args: list[str]) -> None:
    """Run ``python -m runtime ARGS`` as a user would, its output inline with the demo's."""
    sys.stdout.flush()
    subprocess.run([sys.executable, "-m", "runtime", *args], check=False, timeout=120)
