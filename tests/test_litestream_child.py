"""One Litestream per journal: the child dies with the runtime that started it,
and one left running by an earlier owner is stopped before a new one starts.

Two Litestreams on one database (and one replica) corrupt the replica; a
runtime killed with SIGKILL used to leave its Litestream running, and the
restarted runtime started another beside it."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import anyio
import pytest

from runtime import Runtime
from storage import Replication, Store, _litestream

from .models import Account, Deposit, GetBalance
from .test_start_failures import litestreams


async def gone(pid: int, db: str, timeout: float) -> bool:
    with anyio.move_on_after(timeout):
        while pid in litestreams(db):
            await anyio.sleep(0.05)
    return pid not in litestreams(db)


def _child(db: str, replica: str) -> subprocess.Popen[str]:
    """A runtime in a process of its own; it prints its Litestream's pid once replicating."""
    child = textwrap.dedent(
        f"""
        import anyio, sys
        sys.path.insert(0, {os.getcwd()!r})
        from runtime import Runtime
        from tests.models import Account, Deposit
        async def main():
            async with Runtime({db!r}, actors=[Account], replicate={replica!r}) as rt:
                await rt.tell("Account/a", Deposit(1), durability="replicated")
                print(rt._replication.litestream._proc.pid, flush=True)
                await anyio.sleep(120)
        anyio.run(main)
        """
    )
    return subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()


async def test_a_runtime_restarted_after_sigkill_runs_exactly_one_litestream(db: str, tmp_path: Path) -> None:
    replica = str(tmp_path / "replica")
    proc = _child(db, replica)
    try:
        assert proc.stdout is not None
        pid = int(proc.stdout.readline())
        assert litestreams(db) == [pid]
    finally:
        _kill(proc)
    # Restarted at once, as a supervisor would.
    async with Runtime(db, actors=[Account], replicate=replica) as rt:
        (ours,) = litestreams(db)  # exactly one: the killed runtime's is gone
        assert ours != pid
        with open(db + "-litestream.pid") as f:
            assert int(f.read()) == ours  # recorded beside the journal
        await rt.tell("Account/a", Deposit(2), durability="replicated")
        assert await rt.ask("Account/a", GetBalance()) == 3
        assert litestreams(db) == [ours]
    assert litestreams(db) == []
    assert not os.path.exists(db + "-litestream.pid")  # a clean stop forgets it


async def test_a_runtime_killed_with_sigkill_takes_its_litestream_along(db: str, tmp_path: Path) -> None:
    proc = _child(db, str(tmp_path / "replica"))
    try:
        assert proc.stdout is not None
        pid = int(proc.stdout.readline())
    finally:
        _kill(proc)
    # Nobody else acts: the parent-death signal alone stops it (after its final sync).
    assert await gone(pid, db, 30), f"litestream pid {pid} outlived the runtime killed with SIGKILL"


async def test_a_litestream_left_running_by_an_earlier_owner_is_stopped_first(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    replica = str(tmp_path / "replica")
    async with Runtime(db, actors=[Account], replicate=replica) as rt:
        await rt.tell("Account/a", Deposit(1), durability="replicated")
    # A Litestream as an earlier owner would leave it (not our child, no parent-death signal).
    config = {
        "socket": {"enabled": True, "path": str(tmp_path / "stray.sock")},
        "dbs": [{"path": os.path.realpath(db), "replica": {"type": "file", "path": replica}}],
    }
    Path(db + "-litestream.yml").write_text(json.dumps(config))
    stray = subprocess.Popen(
        [_litestream.find_binary(), "replicate", "-config", os.path.realpath(db) + "-litestream.yml"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with anyio.fail_after(15):
            while not os.path.exists(tmp_path / "stray.sock"):
                await anyio.sleep(0.05)
        Path(db + "-litestream.pid").write_text(f"{stray.pid}\n")
        assert litestreams(db) == [stray.pid]
        monkeypatch.setattr(_litestream, "STRAY_GRACE_S", 0.5)
        caplog.set_level(logging.WARNING, logger="stele.replication")
        async with Runtime(db, actors=[Account], replicate=replica) as rt:
            assert stray.poll() is not None, "the stray litestream was stopped"
            ours = litestreams(db)
            assert len(ours) == 1 and ours != [stray.pid]
            await rt.tell("Account/a", Deposit(2), durability="replicated")
        assert f"a litestream (pid {stray.pid}) left by an earlier owner still serves" in caplog.text
        assert "sending SIGTERM" in caplog.text
    finally:
        stray.kill()
        stray.wait()
    assert litestreams(db) == []


async def test_litestream_outlives_the_thread_that_started_the_runtime(db: str, tmp_path: Path) -> None:
    """The parent-death signal fires when the *thread* that forked exits: the
    child must be forked by the supervision's own thread, not the caller's."""
    replica = str(tmp_path / "replica")
    box: dict[str, Store] = {}

    def open_store() -> None:
        box["store"] = Store.open(
            db, notify=lambda results: None, replication=Replication(os.path.realpath(db), replica)
        )

    opener = threading.Thread(target=open_store)
    opener.start()
    opener.join()
    store = box["store"]
    try:
        assert store.replication is not None and store.replication.litestream is not None
        litestream = store.replication.litestream
        pid = litestream.pid
        assert pid is not None
        with anyio.fail_after(10):  # the thread is gone from the kernel too: its death signal would be out
            while os.path.exists(f"/proc/self/task/{opener.native_id}"):
                await anyio.sleep(0.01)
        await anyio.sleep(1.0)  # room for a SIGTERM to take effect, were one sent
        assert litestream.running and litestream.pid == pid and litestream.restarts == 0
        assert not any("signal received" in line for line in litestream.tail)
        assert litestreams(db) == [pid]
    finally:
        await anyio.to_thread.run_sync(store.close)
    assert litestreams(db) == []


def test_a_stray_that_is_not_litestream_is_left_alone(db: str, tmp_path: Path) -> None:
    """A recorded pid reused by another process is never signalled."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        Path(db + "-litestream.pid").write_text(f"{other.pid}\n")
        store = Store.open(
            db, notify=lambda results: None, replication=Replication(os.path.realpath(db), str(tmp_path / "r"))
        )
        store.close()
        assert other.poll() is None
    finally:
        other.send_signal(signal.SIGKILL)
        other.wait()
