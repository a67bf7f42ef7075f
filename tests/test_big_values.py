"""A 50 MB effect result and a 50 MB event: stored once, replayed, checked, listed and served,
each in a fresh child process whose peak memory is measured (``tests/big_child.py``).

Bounds: writing and replaying hold a few copies of the value (the handler makes it, the codec
encodes it, replay decodes it), so their peak stays under 8 x 50 MB over the process's start;
a listing (``entry_previews``, ``history``, ``GET .../journal``) reads a bounded part of each
value, so its peak stays within 16 MB of the start, and so does serving a value whole,
streamed piece by piece (``GET .../journal/{seq}``).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec

from runtime.interfaces._check import check
from storage import Journal

from . import report
from .big_values import SIZE, produce
from .served import ROOT, Server

MB = 1024 * 1024
WRITE_OR_REPLAY_MAX_MB = 8 * SIZE / MB
LISTING_MAX_MB = 16


def child(mode: str, db: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.big_child", mode, db],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def vm_hwm_mb(pid: int) -> float:
    """The peak resident set of process ``pid`` so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_50_mb_values_are_stored_replayed_listed_and_served_with_bounded_memory(tmp_path: Path) -> None:
    db = str(tmp_path / "big.db")
    wrote = child("write", db)
    replayed = child("replay", db)
    listed = child("list", db)
    history = child("history", db)
    for name, figures in (("write", wrote), ("replay", replayed)):
        assert figures["peak_mb"] - figures["baseline_mb"] < WRITE_OR_REPLAY_MAX_MB, (name, figures)
    assert listed["peak_mb"] - listed["baseline_mb"] < LISTING_MAX_MB, listed
    assert history["peak_mb"] - history["baseline_mb"] < LISTING_MAX_MB, history["peak_mb"]
    kinds = {kind: (size, truncated) for kind, size, truncated in listed["entries"]}
    assert kinds["effect"][0] > SIZE and kinds["effect"][1] and kinds["event"][0] > SIZE and kinds["event"][1]
    lines = {line["kind"]: line for line in history["lines"]}
    assert lines["effect"]["data"]["result"].startswith(produce(7)[:1000])
    assert lines["effect"]["data"]["result"].endswith(f"[{SIZE:,} bytes]")
    assert lines["event"]["data"]["text"].startswith(produce(8)[:1000]) and lines["event"]["truncated"]
    assert lines["reply"]["data"] == {"ok": True, "value": SIZE}

    with Journal.open(db) as journal:
        stats = journal.payload_stats()
        assert SIZE * 2 <= stats.content_bytes < SIZE * 2.1  # each value once
        assert stats.stored_bytes < 0.6 * stats.content_bytes  # hex: zstd stores about half
    assert check(db).ok

    server = Server(db, "--no-replicate", module="tests.big_values")
    try:
        before = vm_hwm_mb(server.proc.pid)
        host, port = "127.0.0.1", server.port
        conn = http.client.HTTPConnection(host, port, timeout=120)
        conn.request("GET", "/actors/Big/a/journal?limit=10", headers={"Host": "127.0.0.1"})
        answer = conn.getresponse()
        page = json.loads(answer.read())
        assert answer.status == 200 and [e["kind"] for e in page] == ["message", "effect", "event", "reply"]
        assert page[1]["truncated"] and page[1]["size"] > SIZE and len(json.dumps(page)) < 64 * 1024
        conn.request("GET", "/actors/Big/a/journal/3", headers={"Host": "127.0.0.1"})
        answer = conn.getresponse()
        assert answer.status == 200 and answer.getheader("content-type") == "application/msgpack"
        digest, length = hashlib.sha256(), 0
        while piece := answer.read(1 << 16):  # streamed: never the whole value in this process either
            digest.update(piece)
            length += len(piece)
        conn.close()
        served = vm_hwm_mb(server.proc.pid)
    finally:
        server.stop()
    expected = msgspec.msgpack.encode({"text": produce(8)})
    assert length == len(expected) and digest.digest() == hashlib.sha256(expected).digest()
    assert served - before < LISTING_MAX_MB, (before, served)
    report.add(
        "payloads: two 50 MB values (peak MB over the process's start)",
        write=round(wrote["peak_mb"] - wrote["baseline_mb"]),
        replay=round(replayed["peak_mb"] - replayed["baseline_mb"]),
        list=round(listed["peak_mb"] - listed["baseline_mb"]),
        history=round(history["peak_mb"] - history["baseline_mb"]),
        serve=round(served - before),
    )
