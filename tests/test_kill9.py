"""Crash test with a real process: a child serving tells is SIGKILLed at random
moments, cycle after cycle; then the whole history is checked.

- every acknowledged tell was processed exactly once (G1, G2);
- a tell sent but not acknowledged was processed at most once;
- no effect ran again after its result was journaled (G3): each journaled
  effect's token is the last execution traced for its idempotency key;
- each actor's sequence numbers are contiguous, and its live state is the
  fold of its journaled events.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import msgspec

from storage import Journal

from .models import Recorded

CYCLES = int(os.environ.get("STELE_KILL_CYCLES", "20"))


def spawn(db: str, trace: str, first: int, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.crash_child", db, trace, str(first), str(count)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )


def test_kill9_cycles_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    db, trace = str(tmp_path / "journal.db"), str(tmp_path / "trace.txt")
    rng = random.Random(int(os.environ.get("STELE_KILL_SEED", "9")))
    sent: set[int] = set()
    acked: set[int] = set()
    for cycle in range(CYCLES):
        proc = spawn(db, trace, cycle * 10_000, 10_000)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.02, 0.4))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
        for line in out.splitlines():
            word, _, value = line.partition(" ")
            if word == "send":
                sent.add(int(value))
            elif word == "ack":
                acked.add(int(value))
    assert acked, "no tell was acknowledged before the kills: the test proves nothing"

    proc = spawn(db, trace, 0, 0)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    live = {
        line.split(" ")[1]: json.loads(line.split(" ", 2)[2]) for line in out.splitlines() if line.startswith("state")
    }

    decoder = msgspec.msgpack.Decoder(Recorded)
    processed: Counter[int] = Counter()
    journaled_tokens: dict[str, str] = {}
    with Journal.open(db) as journal:
        assert journal.pending() == []
        for actor in journal.actors():
            entries = list(journal.entries(actor.address))
            assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
            events = [decoder.decode(e.data) for e in entries if e.kind == "event"]
            processed.update(ev.id for ev in events)
            assert live[actor.address] == [ev.id for ev in events]
            for e in entries:
                if e.kind == "effect":
                    key = f"{actor.address}/{e.step}/0"
                    assert key not in journaled_tokens, f"two journaled results for effect {key}"
                    journaled_tokens[key] = e.decoded()["result"]

    assert all(processed[i] == 1 for i in acked), sorted(i for i in acked if processed[i] != 1)[:10]
    assert all(processed[i] <= 1 for i in sent)
    assert set(processed) <= sent

    last_run: dict[str, str] = {}
    for line in Path(trace).read_text().splitlines():
        key, token = line.split(" ")
        last_run[key] = token
    for key, token in journaled_tokens.items():
        assert last_run[key] == token, f"effect {key} ran again after its result was journaled"
    print(f"{CYCLES} kill cycles, {len(sent)} sent, {len(acked)} acknowledged, {sum(processed.values())} processed")
