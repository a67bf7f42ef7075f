"""A Jepsen-style crash history: clients record every call, a server is SIGKILLed, a checker judges.

Usage: python -m tests.jepsen [--cycles N] [--clients N] [--seed N] [--dir DIR]

A real ``python -m runtime serve tests.models`` child serves ``Recorder``
actors over HTTP. Client threads of this driver send tells and asks, each
recorded as *invoke*, then *ok*, *fail* (a definite refusal: 4xx, 503) or
*unknown* (504, or the connection broke: the server may have committed it).
At a random moment the server is SIGKILLed; the next cycle starts a new one on
the same journal. After the last cycle a server runs until recovery is done,
reports each actor's state, and the checker verifies:

- every ok is in the journal exactly once, no fail at all, every unknown at most once;
- each actor's sequence numbers are contiguous;
- no effect ran again after its result was journaled (the effect's trace);
- an ask's reply is the state it produced: the reply counts the actor's
  events, so the message is exactly that event in the journal;
- the state the last server reported equals the journal replayed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors import SteleError
from runtime.interfaces._client import call

from .histories import Audit, Drain, audit, first_line, integrity, reap

ROOT = Path(__file__).parent.parent
ACTORS = 4


@dataclass
class Op:
    """One call of a client: invoked, then completed with an outcome."""

    id: int
    actor: str
    kind: str  # "tell" or "ask"
    outcome: str = "invoke"
    status: int = 0
    reply: Any = None


@dataclass
class History:
    """Every operation of every cycle, in invocation order (thread-safe)."""

    ops: list[Op] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def invoke(self, op: Op) -> None:
        with self.lock:
            self.ops.append(op)

    def counts(self) -> Counter[str]:
        return Counter(op.outcome for op in self.ops)


class Server:
    """``python -m runtime serve tests.models`` on an ephemeral loopback port.

    A context manager: on leaving, on every path, a server still running is
    killed, waited for and its pipe closed.
    """

    def __init__(self, db: str, trace: str) -> None:
        env = {**os.environ, "STELE_RECORDER_TRACE": trace}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runtime", "serve", "tests.models", "--db", db, "--http", "127.0.0.1:0",
             "--no-replicate"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT, env=env,
        )  # fmt: skip
        try:
            line = first_line(self.proc)
            if not line.startswith("listening on "):
                raise RuntimeError(f"the server did not start: {line!r}")
        except BaseException:
            self.close()
            raise
        self.base = line.split()[-1]

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def kill(self) -> None:
        """SIGKILL, as a power cut or the OOM killer would."""
        self.proc.send_signal(signal.SIGKILL)
        self.close()

    def stop(self) -> None:
        """SIGTERM: the server closes its runtime and exits 0."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        assert self.proc.returncode == 0, f"the server exited with {self.proc.returncode} on SIGTERM"

    def close(self) -> None:
        """Kill the server if it still runs, wait for it, close its pipe (idempotent)."""
        reap(self.proc)


def post(base: str, actor: str, handler: str, body: dict[str, Any], *, wait: bool) -> tuple[int, Any]:
    """The server's answer, through the command line's own client; SteleError if the server went away."""
    url = f"{base}/actors/{actor}/{handler}" + ("" if wait else "?wait=false")
    return call(url, token=None, body=json.dumps(body).encode(), timeout=10)


def outcome_of(status: int, reply: Any) -> str:
    """What an answer says happened, by the server's table (runtime/interfaces/_http_outcomes.py)."""
    if status in (200, 202):
        return "ok"  # ran, or durably accepted: it runs (after a restart if need be), once
    if status == 409:
        # The handler ran and raised: processed. A reused idempotency key: refused.
        return "ok" if isinstance(reply, dict) and reply.get("error") == "handler" else "fail"
    if status == 504 or (status >= 500 and status != 503):
        return "unknown"  # a timeout, an unknown commit: it may have run
    return "fail"  # any other 4xx, 503: refused, nothing accepted


def client(base: str, history: History, ids: Iterator[int], rng: random.Random, stop: threading.Event) -> None:
    while not stop.is_set():
        i = next(ids)
        op = Op(i, f"Recorder/{rng.randrange(ACTORS)}", rng.choice(("tell", "ask")))
        history.invoke(op)
        try:
            status, reply = post(base, op.actor, "record", {"id": i, "sender": op.actor}, wait=op.kind == "ask")
        except SteleError:  # the server died around this call
            op.outcome = "unknown"
            return
        op.outcome, op.status, op.reply = outcome_of(status, reply), status, reply


def check(history: History, journal: Audit, final: dict[str, list[int]]) -> None:
    """Raise AssertionError naming the first operations that break a property."""
    seen = journal.processed
    by_outcome: dict[str, list[Op]] = {}
    for op in history.ops:
        by_outcome.setdefault(op.outcome, []).append(op)
    assert "invoke" not in by_outcome, f"operations never completed: {by_outcome['invoke'][:5]}"
    lost = [op for op in by_outcome.get("ok", []) if seen[op.id] != 1]
    assert not lost, f"ok but not in the journal exactly once: {lost[:5]}"
    present = [op for op in by_outcome.get("fail", []) if seen[op.id]]
    assert not present, f"failed yet in the journal: {present[:5]}"
    assert not journal.duplicated(), f"processed twice: {journal.duplicated()[:5]}"
    invoked = {op.id for op in history.ops}
    assert set(seen) <= invoked, f"processed but never sent: {sorted(set(seen) - invoked)[:5]}"
    for op in by_outcome.get("ok", []):
        if op.kind == "ask" and op.status == 200:  # a 202 ask is accepted but has no reply to check
            events = journal.events[op.actor]
            assert events[op.reply - 1] == op.id, f"{op}: the reply is not the state the message produced"
    assert final == {a: journal.events.get(a, []) for a in final}, "the served state is not the journal replayed"


def run(directory: Path, *, cycles: int, clients: int = 4, seed: int = 0) -> dict[str, int]:
    """Run the cycles, check the history; return the counts."""
    db, trace = str(directory / "journal.db"), str(directory / "trace")
    rng = random.Random(seed)
    history = History()
    shared_ids = itertools.count()  # next() on it is atomic: the threads share it
    for _ in range(cycles):
        with Server(db, trace) as server:
            stop = threading.Event()
            threads = [
                threading.Thread(
                    target=client,
                    args=(server.base, history, shared_ids, random.Random(rng.random()), stop),
                    daemon=True,  # a client stuck past its join timeout must not keep pytest alive
                )
                for _ in range(clients)
            ]
            try:
                for t in threads:
                    t.start()
                time.sleep(rng.uniform(0.05, 0.5))
                server.kill()
            finally:
                stop.set()
                for t in threads:
                    if t.ident is not None:
                        t.join(timeout=30)
            assert not any(t.is_alive() for t in threads), "a client hung"
    assert integrity(db) == "ok"
    with Server(db, trace) as server:
        # The backlog grows with the cycles: recovery fails on a stall, not a deadline.
        watch = Drain(db)
        while watch.left():
            time.sleep(0.05)
        final = {}
        for k in range(ACTORS):
            status, state = post(server.base, f"Recorder/{k}", "fetch", {}, wait=True)
            assert status == 200, state
            final[f"Recorder/{k}"] = state
        server.stop()
    journal = audit(db, trace)
    check(history, journal, final)
    counts = history.counts()
    return {"cycles": cycles, "operations": len(history.ops), **{f"outcome {k}": v for k, v in counts.items()},
            "effects checked": journal.effects}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", type=Path, default=None, help="where to keep the journal (default: a temp dir)")
    args = parser.parse_args()
    directory = args.dir or Path(tempfile.mkdtemp(prefix="stele-jepsen-"))
    directory.mkdir(parents=True, exist_ok=True)
    counts = run(directory, cycles=args.cycles, clients=args.clients, seed=args.seed)
    print(", ".join(f"{k} {v:,}" for k, v in counts.items()))
    print(f"journal and trace kept in {directory}")


if __name__ == "__main__":
    main()
