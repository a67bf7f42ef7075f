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
import msgspec
import pytest

from actors import Actor, apply, handler
from runtime import Runtime
from storage import Journal

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


class Job(msgspec.Struct):
    id: int


class Did(msgspec.Struct):
    id: int


class Stuck:
    """Jobs whose effect never returns: the test abandons the runtime there, as a crash would."""

    ids: set[int] = set()
    runs: list[int] = []


async def run_job(i: int) -> int:
    Stuck.runs.append(i)
    if i in Stuck.ids:
        await anyio.sleep(3600)
    return i


class Jobs(Actor):
    class State(msgspec.Struct):
        done: list[int] = msgspec.field(default_factory=list)

    state: State

    @handler
    async def job(self, msg: Job) -> None:
        await self.ctx.effect(run_job, msg.id)
        self.emit(Did(msg.id))

    @apply
    def _did(self, ev: Did) -> None:
        self.state.done.append(ev.id)


async def until(predicate: object) -> None:
    with anyio.fail_after(STALL_S):
        while not predicate():  # type: ignore[operator]
            await anyio.sleep(0.005)


async def test_a_message_that_stops_the_process_behind_a_backlog_still_ends_as_a_dead_letter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Recovery marks the attempt of each actor's first message only: a poison
    # message deep in a recovered backlog runs once uncounted (as a new tell
    # does), then is first at every start, counted, and buried after max_attempts.
    db = str(tmp_path / "journal.db")
    poison = 4
    monkeypatch.setattr(Stuck, "ids", {1, poison})
    monkeypatch.setattr(Stuck, "runs", [])
    rt = await Runtime(db, actors=[Jobs]).__aenter__()
    max_attempts = rt.max_attempts
    for i in range(1, 7):
        await rt.tell("Jobs/a", Job(i))
    await until(lambda: Stuck.runs == [1])
    await rt.abandon()  # a backlog of six, the first under way
    Stuck.ids.discard(1)
    poison_runs = 0
    for _ in range(max_attempts + 2):
        Stuck.runs.clear()
        rt = await Runtime(db, actors=[Jobs]).__aenter__()
        await until(lambda: poison in Stuck.runs or Stuck.runs[-2:] == [5, 6])
        poison_runs += poison in Stuck.runs
        letters = await rt.dead_letters()
        if letters:  # the poison is buried: let the rest of the backlog commit
            watch = Drain(db)
            while await anyio.to_thread.run_sync(watch.left):
                await anyio.sleep(0.01)
            await rt.abandon()
            break
        await rt.abandon()
    (letter,) = letters
    assert (letter.type, letter.attempts) == ("Job", max_attempts + 1)
    counted = letter.attempts - 1  # the last count found it over max_attempts: it did not run
    assert poison_runs - counted <= 1, f"{poison_runs} runs, {counted} counted: only the first may go uncounted"
    with Journal.open(db) as journal:
        assert journal.pending() == []
        assert [e.decoded()["id"] for e in journal.entries("Jobs/a", kind="event")] == [1, 2, 3, 5, 6]
