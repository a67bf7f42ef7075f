"""A start that fails part-way leaves nothing behind: the owner lock is released,
Litestream is stopped (its process is gone) and every thread the start began
has ended, so the next start succeeds and runs exactly one Litestream."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from actors import JournalError, ReplicationError, SteleError
from runtime import Runtime
from runtime._scheduler import Scheduler
from storage import _litestream

from .conftest import outside
from .models import Account, Deposit, GetBalance
from .s3server import S3Server


def litestreams(db: str) -> list[int]:
    """Pids of live ``litestream replicate`` processes serving ``db`` (read from /proc)."""
    config = (os.path.realpath(db) + "-litestream.yml").encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if b"replicate" in argv and config in argv and state not in (b"Z", b"X"):
            found.append(int(entry))
    return found


def stele_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("stele-")}


@pytest.fixture
def leftovers(db: str) -> Iterator[None]:
    """Checks, after the failed start, that nothing it began is still there."""
    before = stele_threads()
    yield
    assert litestreams(db) == [], "no litestream is left"
    assert stele_threads() - before == set(), "every thread the start began has ended"


async def _second_start_works(db: str, replicate: str) -> None:
    async with Runtime(db, actors=[Account], replicate=replicate) as rt:
        await rt.tell("Account/a", Deposit(1))
        assert await rt.ask("Account/a", GetBalance()) >= 1
        status = rt.replication
        assert status is not None and status.litestream_running
        assert len(litestreams(db)) == 1, "exactly one litestream serves the journal"
    assert litestreams(db) == []


async def test_the_runtime_failing_after_the_store_opened(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, leftovers: None
) -> None:
    replica = str(tmp_path / "replica")

    def fail(self: Scheduler, pending: Any) -> None:
        assert litestreams(db), "litestream was running when the start failed"
        raise RuntimeError("recovery failed")

    with monkeypatch.context() as m:
        m.setattr(Scheduler, "recover", fail)
        with pytest.raises(RuntimeError, match="recovery failed"):
            async with Runtime(db, actors=[Account], replicate=replica):
                pass
    await _second_start_works(db, replica)


async def test_litestream_failing_at_start(
    db: str, s3: S3Server, monkeypatch: pytest.MonkeyPatch, leftovers: None
) -> None:
    url = s3.url(s3.bucket())
    # The known trap, for real: with AWS_CA_BUNDLE in its environment Litestream 0.5
    # exits at once against a custom endpoint.
    with monkeypatch.context() as m:
        m.setenv("AWS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
        m.setattr(_litestream, "PASSED_ENV", (*_litestream.PASSED_ENV, "AWS_CA_BUNDLE"))
        with anyio.fail_after(60), pytest.raises(ReplicationError, match="litestream exited at start"):
            async with Runtime(db, actors=[Account], replicate=url):
                pass
    await _second_start_works(db, url)


async def test_the_replica_check_failing(db: str, s3: S3Server, leftovers: None) -> None:
    with anyio.fail_after(60), pytest.raises(ReplicationError, match="cannot reach bucket"):
        async with Runtime(db, actors=[Account], replicate=s3.url("no-such-bucket")):
            pass
    await _second_start_works(db, s3.url(s3.bucket()))


async def test_a_migration_failing(db: str, tmp_path: Path, leftovers: None) -> None:
    replica = str(tmp_path / "replica")
    async with Runtime(db, actors=[Account]) as rt:
        await rt.tell("Account/a", Deposit(1))
    conn = outside(db)
    version = conn.execute("PRAGMA user_version").get
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    with pytest.raises(JournalError, match="schema version 999 is newer"):
        async with Runtime(db, actors=[Account], replicate=replica):
            pass
    conn = outside(db)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.close()
    await _second_start_works(db, replica)


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.05, 0.1, 0.2, 0.4])
async def test_a_start_cancelled_at_any_moment(db: str, tmp_path: Path, delay: float, leftovers: None) -> None:
    replica = str(tmp_path / "replica")
    rt = Runtime(db, actors=[Account], replicate=replica)
    started = False
    with anyio.move_on_after(delay):
        await rt.__aenter__()
        started = True
    if started:  # the start won the race: an ordinary close
        await rt.close()
    assert litestreams(db) == []
    try:
        await _second_start_works(db, replica)
    except SteleError as exc:  # pragma: no cover - the assertion's message says what was left
        pytest.fail(f"the start after a cancelled one failed: {exc}")


async def test_a_close_under_a_cancelled_scope_still_lets_go_of_everything(db: str) -> None:
    # `async with Runtime(...)` inside `move_on_after`: the close runs under a
    # cancelled scope. It used to be cancelled before the store closed, leaving
    # the owner lock held (and, with replication, Litestream running).
    with anyio.move_on_after(0.2):
        async with Runtime(db, actors=[Account]) as rt:
            await rt.ask("Account/a", Deposit(1))
            await anyio.sleep(10)
    async with Runtime(db, actors=[Account]) as rt:  # the lock was released
        assert await rt.ask("Account/a", GetBalance()) == 1
