"""A Jepsen-style history over many nodes: clients call every node, nodes are SIGKILLed, a checker judges.

Usage: python -m tests.jepsen_nodes --db postgresql://... [--cycles N] [--nodes N] [--clients N]

``nodes`` real ``python -m runtime serve tests.models --node`` processes
share one PostgreSQL database. Client threads send tells and asks to
``Recorder`` actors through any live node (most actors are owned by another
node: the message goes through the database), each recorded as invoke, then
ok, fail or unknown (the table of tests/jepsen.py). Each cycle SIGKILLs one
node at a random moment, measures how long until the live nodes hold every
shard again (the take-over time), and starts a new node in its place. With
``restart``, the PostgreSQL server is restarted instead (fast shutdown, under
load). Then the checker of tests/jepsen.py: every ok exactly once in the
journal, no fail in it, every unknown at most once, no effect run again after
its result was journaled, each ask's reply the state it produced, the served
state the journal replayed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

import storage
from actors import SteleError
from runtime.interfaces._client import call

from .histories import STALL_S, audit, first_line, reap
from .jepsen import History, Op, check, outcome_of
from .pgserver import Cluster

ROOT = Path(__file__).parent.parent
ACTORS = 8


class Node:
    """``serve tests.models --node NAME`` on an ephemeral loopback port; its log in a file."""

    def __init__(
        self, url: str, trace: str, *, name: str, lease: str = "1.5s", env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self._log = tempfile.NamedTemporaryFile(prefix=f"stele-node-{name}-", suffix=".log", delete=False)  # noqa: SIM115
        environment = {**os.environ, "STELE_RECORDER_TRACE": trace, "STELE_NODE_NAME": name, **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runtime", "serve", "tests.models", "--db", url, "--http", "127.0.0.1:0",
             "--node", name, "--lease", lease],
            stdout=subprocess.PIPE, stderr=self._log, text=True, cwd=ROOT, env=environment,
        )  # fmt: skip
        try:
            line = first_line(self.proc)
            if not line.startswith("listening on "):
                raise RuntimeError(f"node {name} did not start: {line!r}\n{self.log()}")
        except BaseException:
            self.close()
            raise
        self.base = line.split()[-1]

    def post(self, actor: str, handler: str, body: dict[str, Any], *, wait: bool) -> tuple[int, Any]:
        """The node's answer; SteleError if it went away."""
        url = f"{self.base}/actors/{actor}/{handler}" + ("" if wait else "?wait=false")
        return call(url, token=None, body=json.dumps(body).encode(), timeout=15)

    def status(self) -> dict[str, Any]:
        """GET /status."""
        code, body = call(f"{self.base}/status", token=None, body=None, timeout=15)
        assert code == 200, body
        result: dict[str, Any] = body
        return result

    def log(self) -> str:
        """What the node logged so far."""
        return Path(self._log.name).read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL, as a power cut or the OOM killer would."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.close()

    def stop(self) -> None:
        """SIGTERM: the node gives its leases back and exits 0."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        assert self.proc.returncode == 0, f"node {self.name} exited with {self.proc.returncode}:\n{self.log()[-3000:]}"
        self.close()

    def close(self) -> None:
        """Kill it if it still runs, wait, close its pipes (idempotent); its log file stays until then."""
        reap(self.proc)
        self._log.close()
        if os.path.exists(self._log.name) and not os.environ.get("STELE_KEEP_NODE_LOGS"):
            os.unlink(self._log.name)


def cluster_state(url: str) -> dict[str, int]:
    """Live node -> shards it holds a live lease on."""
    try:
        nodes, _ = storage.cluster_view(url)
    except SteleError:
        return {}
    return {n.id: n.shards for n in nodes if n.alive and n.shards}


def covered(url: str, alive: set[str]) -> bool:
    """Whether every shard has a live lease held by one of ``alive``."""
    try:
        _, leases = storage.cluster_view(url)
    except SteleError:
        return False
    return bool(leases) and all(lease.owner in alive and lease.expires_in_s > 0 for lease in leases)


def client(nodes: list[Node], history: History, ids: Any, rng: random.Random, stop: threading.Event) -> None:
    while not stop.is_set():
        live = [n for n in nodes if n.proc.poll() is None]
        if not live:
            time.sleep(0.01)
            continue
        node = rng.choice(live)
        i = next(ids)
        op = Op(i, f"Recorder/{rng.randrange(ACTORS)}", rng.choice(("tell", "ask")))
        history.invoke(op)
        try:
            status, reply = node.post(op.actor, "record", {"id": i, "sender": op.actor}, wait=op.kind == "ask")
        except SteleError:  # the node died around this call (or the database restarted under it)
            op.outcome = "unknown"
            continue
        op.outcome, op.status, op.reply = outcome_of(status, reply), status, reply


def pending(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM inbox").fetchone()
    return int(row[0]) if row else 0


def run(
    url: str,
    directory: Path,
    *,
    cycles: int,
    nodes: int = 3,
    clients: int = 4,
    seed: int = 0,
    lease: str = "1.5s",
    restart: Cluster | None = None,
) -> dict[str, Any]:
    """Run the cycles and check the history; the counts and the take-over times."""
    trace = str(directory / "trace")
    rng = random.Random(seed)
    history = History()
    ids = itertools.count()
    names = itertools.count()
    live: list[Node] = []
    takeovers: list[float] = []
    restarts = 0

    def start() -> Node:
        node = Node(url, trace, name=f"n{next(names)}", lease=lease)
        live.append(node)
        return node

    try:
        for _ in range(nodes):
            start()
        deadline = time.monotonic() + 60
        while not covered(url, {n.name for n in live}) and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(cycles):
            stop = threading.Event()
            threads = [
                threading.Thread(
                    target=client, args=(live, history, ids, random.Random(rng.random()), stop), daemon=True
                )
                for _ in range(clients)
            ]
            try:
                for t in threads:
                    t.start()
                time.sleep(rng.uniform(0.3, 1.0))
                if restart is not None:
                    restart.restart("fast")
                    restarts += 1
                    time.sleep(0.5)
                else:
                    victim = rng.choice(live)
                    victim.kill()
                    killed = time.monotonic()
                    live.remove(victim)
                    alive = {n.name for n in live}
                    deadline = killed + 60
                    while not covered(url, alive) and time.monotonic() < deadline:
                        time.sleep(0.02)
                    assert covered(url, alive), f"the live nodes did not take {victim.name}'s shards over"
                    takeovers.append(time.monotonic() - killed)
                    time.sleep(0.3)  # the load goes on a moment after the take-over
            finally:
                stop.set()
                for t in threads:
                    if t.ident is not None:
                        t.join(timeout=60)
            assert not any(t.is_alive() for t in threads), "a client hung"
            if restart is None:
                start()  # a new node in the killed one's place
        # Every message runs: the backlog drains (a stall, not a deadline, fails it).
        fewest, since = None, time.monotonic()
        while left := pending(url):
            if fewest is None or left < fewest:
                fewest, since = left, time.monotonic()
            assert time.monotonic() - since < STALL_S, f"the nodes stalled with {left} message(s) pending"
            time.sleep(0.1)
        final = {}
        for k in range(ACTORS):
            status, state = live[0].post(f"Recorder/{k}", "fetch", {}, wait=True)
            assert status == 200, state
            final[f"Recorder/{k}"] = state
        for node in list(live):
            node.stop()
            live.remove(node)
    except BaseException:
        for node in live:  # what the nodes said, for whoever reads the failure
            print(f"--- node {node.name} ---\n{node.log()[-6000:]}", file=sys.stderr)
        raise
    finally:
        for node in live:
            node.kill()
    journal = audit(url, trace)
    check(history, journal, final)
    counts = history.counts()
    result: dict[str, Any] = {
        "cycles": cycles,
        "operations": len(history.ops),
        **{f"outcome {k}": v for k, v in counts.items()},
        "effects checked": journal.effects,
        "server restarts": restarts,
    }
    if takeovers:
        result["takeover p50 s"] = statistics.median(takeovers)
        result["takeover max s"] = max(takeovers)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="an empty PostgreSQL database's URL")
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="stele-jepsen-nodes-"))
    counts = run(args.db, directory, cycles=args.cycles, nodes=args.nodes, clients=args.clients, seed=args.seed)
    print(", ".join(f"{k} {v:,.2f}" if isinstance(v, float) else f"{k} {v:,}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
