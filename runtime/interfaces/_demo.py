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
from pathlib import Path
from typing import Any

from rich.rule import Rule

import storage
from actors import SteleError

from ._client import call
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

    console.print(Rule("a crash in the middle of a step"))
    question = "How do agents survive crashes?"
    slow = {"question": question, "depth": 2}
    outcome: dict[str, Any] = {}
    caller = threading.Thread(target=lambda: outcome.update(reply=_http(f"{server.url}/actors/{agent}/research", slow)))
    caller.start()
    deadline = time.monotonic() + 30
    while question not in (Path(tool_log).read_text() if os.path.exists(tool_log) else ""):
        if time.monotonic() > deadline:
            raise SteleError("the slow step never reached its first effect")
        time.sleep(0.02)
    time.sleep(0.2)  # the search result is journaled; the model is still thinking
    server.kill()
    caller.join()
    console.print(
        plain(f"the server was SIGKILLed while the model was answering; the caller saw: {outcome['reply'][1]!r}")
    )
    server = _Server(db, env)
    console.print(plain(f"restarted at {server.url}: the interrupted step resumes from its journal"))
    deadline = time.monotonic() + 30
    while True:
        status, body = _http(f"{server.url}/actors/{agent}")
        if status == 200 and question in body["state"]["answers"]:
            break
        if time.monotonic() > deadline:
            raise SteleError("the interrupted step did not complete after the restart")
        time.sleep(0.1)
    console.print(plain(f"answer recorded after recovery: {body['state']['answers'][question]!r}"))
    calls: dict[str, int] = {}
    for line in Path(tool_log).read_text().splitlines():
        query = line.split(" ", 1)[1]
        calls[query] = calls.get(query, 0) + 1
    for query, count in calls.items():
        console.print(plain(f"search tool calls for {query!r}: {count}  (journaled once: never called again)"))
    status, shelf = _http(f"{server.url}/actors/Librarian/main/catalogue", {})
    console.print(plain(f"the librarian's catalogue (sent exactly once per answer): {shelf}"))

    console.print(Rule(f"what the journal recorded for {agent}"))
    _cli(["history", agent, "--db", db])
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
    console.print(plain(f"  python -m runtime history {agent} --db {db} --kind effect"))
    console.print(plain(f"  python -m runtime state {agent} --db {db} --at 5 --module {AGENTS}"))
    console.print(plain(f"  python -m runtime actors --db {db}"))
    return 0


def _cli(args: list[str]) -> None:
    """Run ``python -m runtime ARGS`` as a user would, its output inline with the demo's."""
    sys.stdout.flush()
    subprocess.run([sys.executable, "-m", "runtime", *args], check=False, timeout=120)
