"""nodes: one node against three on one PostgreSQL database, and the take-over time after SIGKILL.

Throughput: ``serve benchmarks._model --node`` processes on a private server (the tests' fixture
code), loaded over HTTP by load processes of their own (benchmarks/_nodes_load.py: keep-alive
asks ``Counter/N inc`` to 1,000 actors, the same total concurrency split evenly between the
nodes). With three nodes about two asks in three go to an actor another node owns: through the
inbox table, a NOTIFY, and the reply back as a promise. Where the time goes: the CPU seconds of
the nodes, of the PostgreSQL server's processes and of the load processes over the run (from
/proc), the writers' commit time, and how many messages crossed between nodes.

Take-over: tests/jepsen_nodes.py's kill cycles (three nodes, clients calling all of them, one
node SIGKILLed per cycle) with the default lease: the time from the kill until the live nodes
hold every shard again, p50 and max.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from runtime.interfaces._client import call
from tests import pgserver
from tests.histories import first_line, reap
from tests.jepsen_nodes import covered
from tests.jepsen_nodes import run as kill_cycles

ROOT = Path(__file__).parent.parent
TICKS = os.sysconf("SC_CLK_TCK")

Result = dict[str, Any]


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU seconds of these processes so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def server_pids(cluster: pgserver.Cluster) -> list[int]:
    """The postmaster and its children (backends, writers)."""
    main = int((cluster.data / "postmaster.pid").read_text().split()[0])
    pids = [main]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if ppid == main:
                pids.append(int(entry.name))
    return pids


def throughput(url: str, cluster: pgserver.Cluster, nodes: int, seconds: float, concurrency: int) -> Result:
    procs: list[subprocess.Popen[str]] = []
    bases: list[str] = []
    try:
        for i in range(nodes):
            proc = subprocess.Popen(
                [sys.executable, "-m", "runtime", "serve", "benchmarks._model", "--db", url, "--http", "127.0.0.1:0",
                 "--node", f"bench{i}", "--durability", "fsync"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
            )  # fmt: skip
            procs.append(proc)
            line = first_line(proc)
            if not line.startswith("listening on "):
                raise RuntimeError(f"node {i} did not start: {line!r}")
            bases.append(line.split()[-1])
        deadline = time.monotonic() + 60
        names = {f"bench{i}" for i in range(nodes)}
        while not covered(url, names) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(3)  # the shares settle (a node started first holds everything for a renewal)
        pids = [p.pid for p in procs]
        db = server_pids(cluster)
        before_nodes, before_db = cpu_seconds(pids), cpu_seconds(db)
        share = str(concurrency // nodes)
        before_load = os.times()
        loads = [
            subprocess.Popen(
                [sys.executable, "-m", "benchmarks._nodes_load", base, str(seconds), share, "1000"],
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
            for base in bases
        ]
        started = time.monotonic()
        outputs = [load.communicate(timeout=seconds + 120)[0] for load in loads]
        elapsed = time.monotonic() - started
        after_load = os.times()  # the loaders have exited: their CPU is in this process's children times
        load_cpu = (after_load.children_user + after_load.children_system) - (
            before_load.children_user + before_load.children_system
        )
        statuses = []
        for base in bases:
            code, body = call(f"{base}/status", token=None, body=None, timeout=30)
            assert code == 200, body
            statuses.append(body)
        after_nodes, after_db = cpu_seconds(pids), cpu_seconds(server_pids(cluster))
        calls = sum(json.loads(o)["calls"] for o in outputs)
        errors = sum(json.loads(o)["errors"] for o in outputs)
        return {
            "nodes": nodes,
            "asks_per_s": calls / elapsed,
            "errors": errors,
            "node_cpu_s": after_nodes - before_nodes,
            "db_cpu_s": after_db - before_db,
            "load_cpu_s": load_cpu,
            "seconds": elapsed,
            "commit_s": sum(s["writer"]["commit_seconds"] for s in statuses),
            "remote": sum(s["node"]["remote_sent"] for s in statuses),
        }
    finally:
        for proc in procs:
            reap(proc)


def run(workdir: Path, quick: bool = False) -> Result:
    seconds = 5.0 if quick else 15.0
    results: Result = {}
    with pgserver.cluster() as cluster:
        for nodes in (1, 3):
            url = pgserver.Server(cluster.password_url, cluster).database()
            results[f"{nodes} node(s)"] = throughput(url, cluster, nodes, seconds, 48)
        url = pgserver.Server(cluster.password_url, cluster).database()
        cycles = kill_cycles(url, Path(tempfile.mkdtemp(prefix="stele-bench-nodes-")), cycles=5 if quick else 10,
                             nodes=3, clients=4, seed=7, lease="6s")  # fmt: skip
        results["takeover"] = {
            "cycles": cycles["cycles"],
            "p50_s": cycles["takeover p50 s"],
            "max_s": cycles["takeover max s"],
            "lease_s": 6.0,
        }
    return results
