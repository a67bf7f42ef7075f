"""Crash test with a real process: a child serving tells is SIGKILLed at random
moments, cycle after cycle; then the whole history is checked.

- every acknowledged tell was processed exactly once (G1, G2);
- a tell sent but not acknowledged was processed at most once;
- no effect ran again after its result was journaled (G3): each journaled
  effect's token is the last execution traced for its idempotency key;
- each actor's sequence numbers are contiguous, and its live state is the
  fold of its journaled events.

The runtime runs with its default settings (``max_attempts`` included): a
message under way at several kills must still be processed, not buried.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from runtime import Runtime

from .conftest import LONG_FAULTS
from .crash_child import ACTORS
from .histories import STALL_S, Drain, audit, first_line, pending_count, reaped, wait_recovered
from .models import Recorder
from .report import add

CYCLES = int(os.environ.get("STELE_KILL_CYCLES", "20"))
"""Kill cycles of the fast tier; ``--long`` runs ``LONG_FAULTS`` (or CYCLES x LONG_SCALE if more)."""


def spawn(db: str, trace: str, first: int, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.crash_child", db, trace, str(first), str(count)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )


def test_kill9_cycles_lose_and_duplicate_nothing(tmp_path: Path, scale: int) -> None:
    cycles = CYCLES if scale == 1 else max(CYCLES * scale, LONG_FAULTS)
    db, trace = str(tmp_path / "journal.db"), str(tmp_path / "trace.txt")
    rng = random.Random(int(os.environ.get("STELE_KILL_SEED", "9")))
    sent: set[int] = set()
    acked: set[int] = set()
    refused: set[int] = set()  # backpressure: must never be processed
    for cycle in range(cycles):
        with reaped(spawn(db, trace, cycle * 10_000, 10_000)) as proc:
            assert first_line(proc).strip() == "ready"
            time.sleep(rng.uniform(0.02, 0.4))
            proc.send_signal(signal.SIGKILL)
            out, _ = proc.communicate()
            assert proc.returncode == -signal.SIGKILL
        for line in out.splitlines():
            word, _, value = line.partition(" ")
            if word == "send":
                sent.add(int(value))
            elif word == "ack":
                acked.add(int(value))
            elif word == "refused":
                refused.add(int(value))
    assert acked, "no tell was acknowledged before the kills: the test proves nothing"

    with reaped(spawn(db, trace, 0, 0)) as proc:
        # The backlog grows with the cycles: recovery fails on a stall, not a deadline.
        out = wait_recovered(proc, db)
        assert proc.returncode == 0, out
    live = {
        line.split(" ")[1]: json.loads(line.split(" ", 2)[2]) for line in out.splitlines() if line.startswith("state")
    }

    history = audit(db, trace)
    assert live == history.events
    assert not history.lost(acked), history.lost(acked)[:10]
    assert not history.duplicated(), history.duplicated()[:10]
    assert set(history.processed) <= sent
    assert not refused & set(history.processed), "a tell refused by backpressure was processed"
    add("kill -9 (in-process senders)", cycles=cycles, sent=len(sent), acknowledged=len(acked),
        refused=len(refused), processed=sum(history.processed.values()), effects_checked=history.effects)  # fmt: skip


async def test_recovering_a_backlog_costs_no_commit_per_message_beyond_its_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Recorder step commits three units: its message before the effect, the
    # effect's result, its end. Recovery adds one per actor, the attempt of the
    # first message it runs (the one it may have been running at the kill);
    # marking the attempt of every message of a backlog cost a fourth commit each.
    db, trace = str(tmp_path / "journal.db"), str(tmp_path / "trace.txt")
    with reaped(spawn(db, trace, 0, 10_000)) as proc:
        assert first_line(proc).strip() == "ready"
        deadline = time.monotonic() + STALL_S
        while pending_count(db) < 300:  # senders outpace the actors: a backlog builds up
            assert time.monotonic() < deadline, f"no backlog after {STALL_S} s: {pending_count(db)} pending"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    backlog = pending_count(db)
    monkeypatch.setattr(Recorder, "trace_path", trace)
    async with Runtime(db, actors=[Recorder]) as rt:
        watch = Drain(db)
        while await anyio.to_thread.run_sync(watch.left):
            await anyio.sleep(0.01)
        units = rt.stats.units
    assert backlog <= units <= 3 * backlog + 2 * ACTORS, f"{units} units committed to recover {backlog} messages"
