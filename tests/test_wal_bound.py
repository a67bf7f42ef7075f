"""With replication on, the WAL is bounded even while Litestream is down.

Nothing else checkpoints then (``wal_autocheckpoint=0`` and the WAL hook), so
the WAL used to grow until the disk was full. Now the runtime checkpoints and
truncates it at ``max_wal_bytes`` while Litestream is down, says so, serves on,
and once Litestream is back (it takes a full snapshot of a WAL truncated behind
its back) the replica is complete: a restore equals the journal row for row.
Checked against the real binary, many times with ``--long``.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from runtime import Runtime
from storage import DEFAULT_MAX_WAL_BYTES, restore

from .conftest import dump
from .models import Account, Deposit, GetBalance
from .served import request
from .test_http import http_app
from .test_replication import replicated, until

BOUND = 1024 * 1024


def metric(text: str, name: str) -> str:
    """The value of the unlabelled metric ``name`` in a Prometheus exposition."""
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found is not None, f"no {name} in {text}"
    return found.group(1)


async def _burst(rt: Runtime, count: int, start: int = 0) -> None:
    async with anyio.create_task_group() as tg:
        for i in range(start, start + count):
            tg.start_soon(rt.tell, f"Account/{i % 7}", Deposit(1))


@pytest.mark.parametrize("writes_during_restart", [False, True])
async def test_the_wal_is_bounded_while_litestream_is_down_and_the_replica_is_complete_after(
    db: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, scale: int, writes_during_restart: bool
) -> None:
    for run in range(scale):
        run_db = db if run == 0 else str(tmp_path / f"journal-{run}.db")
        await _down_and_back(run_db, str(tmp_path / f"replica-{run}"), tmp_path, caplog, writes_during_restart)


async def _down_and_back(
    db: str, replica: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, writes_during_restart: bool
) -> None:
    caplog.set_level(logging.WARNING)
    caplog.clear()
    sent = 0
    async with Runtime(db, actors=[Account], replicate=replica, max_wal_bytes=BOUND) as rt:
        await _burst(rt, 50)
        sent += 50
        await until(lambda: replicated(rt), 15, "replicated before the outage")
        replication = rt.replicator
        assert replication is not None and replication.litestream is not None
        litestream = replication.litestream
        binary = litestream.binary
        litestream.binary = str(tmp_path / "no-such-litestream")  # it cannot come back for now
        litestream.kill()
        await until(lambda: not litestream.running, 10, "litestream down")
        # Write several bounds' worth while it is down: the WAL is truncated, again and again.
        with anyio.fail_after(120):
            while (status := rt.replication) is not None and status.wal_truncations < 3:
                await _burst(rt, 50, sent)
                sent += 50
        # It served all along: every message is processed (an ask waits behind its actor's tells).
        assert sum([await rt.ask(f"Account/{k}", GetBalance()) for k in range(7)]) == sent
        await until(lambda: rt.replication.wal_bytes <= BOUND, 10, "the WAL back under its bound")  # type: ignore[union-attr]
        status = rt.replication
        assert status is not None and not status.wal_over_bound and status.max_wal_bytes == BOUND
        assert status.commits_at_risk > 0 and not status.litestream_running
        async with http_app(rt) as base:  # and so say the metrics
            _, metrics = await anyio.to_thread.run_sync(request, f"{base}/metrics")
        assert float(metric(metrics, "stele_wal_truncations_total")) >= 3
        assert float(metric(metrics, "stele_wal_max_bytes")) == BOUND
        assert float(metric(metrics, "stele_wal_over_bound")) == 0
        assert "checkpointing and truncating" in caplog.text
        # Litestream comes back.
        litestream.binary = binary
        if writes_during_restart:
            with anyio.fail_after(90):
                while not litestream.running:
                    await _burst(rt, 10, sent)
                    sent += 10
            await _burst(rt, 30, sent)
            sent += 30
        await until(lambda: litestream.running, 90, "litestream restarted")
        # No new commit is needed: the snapshot it takes covers every commit at risk.
        await until(lambda: replicated(rt), 30, "everything replicated after the outage")
        assert sum([await rt.ask(f"Account/{k}", GetBalance()) for k in range(7)]) == sent
    # No commit was reported failed (a WAL truncated under the commit record's reader once did that).
    assert "failed unexpectedly" not in caplog.text and "failed to commit" not in caplog.text
    before = dump(db)
    restored = str(tmp_path / f"restored-{os.path.basename(db)}")
    report = restore(replica, restored)  # integrity_check included
    assert report.integrity == "ok"
    after = dump(restored)
    for table in ("journal", "inbox", "snapshots", "actors", "meta"):
        assert after[table] == before[table], table


async def test_the_status_says_when_the_wal_is_over_its_bound(db: str, tmp_path: Path) -> None:
    async with Runtime(db, actors=[Account], replicate=str(tmp_path / "replica"), max_wal_bytes=BOUND) as rt:
        await rt.tell("Account/a", Deposit(1))
        status = rt.replication
        assert status is not None
        assert 0 < status.wal_bytes <= BOUND and not status.wal_over_bound
        assert status.max_wal_bytes == BOUND and status.wal_truncations == 0
        async with http_app(rt) as base:
            _, metrics = await anyio.to_thread.run_sync(request, f"{base}/metrics")
        assert 0 < float(metric(metrics, "stele_wal_bytes")) <= BOUND
        assert float(metric(metrics, "stele_wal_truncations_total")) == 0
    assert DEFAULT_MAX_WAL_BYTES <= 256 * 1024 * 1024


@pytest.mark.parametrize("value", [0, -1, 1024, 1.5e9, "1GB", True])
def test_a_bad_bound_is_refused_at_once(db: str, value: object) -> None:
    with pytest.raises(ValueError, match="max_wal_bytes must"):
        Runtime(db, actors=[Account], replicate="replica", max_wal_bytes=value)  # type: ignore[arg-type]
