"""The restore drill proves a replica: the real Litestream binary and a moto S3 server on
127.0.0.1. A consistent replica passes; a corrupted LTX file, a replica that stopped
100 commits ago and code that diverges each fail, with a report naming the cause."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import apsw
import pytest

import storage
from runtime import Registry, Runtime, drill
from runtime.interfaces._modules import actor_classes, load_module
from storage import Store
from storage._restore import verify

from .models import Account, Deposit, GetBalance
from .s3server import S3Server
from .served import ROOT, Server, cli, request
from .test_replication import load, replicated, until


def corrupt_newest_ltx(s3: S3Server, bucket: str) -> list[str]:
    """Flip the last byte of the newest LTX file (its file checksum), at every level that holds it.

    A restore reads one of them. Not a byte in the middle: that may land in an
    lz4-compressed page, which then fails to decompress before any checksum is
    compared, with another message (about one run in ten).
    """
    client = s3.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", ()) if o["Key"].endswith(".ltx")]
    newest = max(int(k.rsplit("/", 1)[1].removesuffix(".ltx").split("-")[1], 16) for k in keys)
    victims = [k for k in keys if k.endswith(f"-{newest:016x}.ltx")]
    for key in victims:
        data = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
        data[-1] ^= 0xFF
        client.put_object(Bucket=bucket, Key=key, Body=bytes(data))
    return victims


async def test_a_consistent_replica_passes(db: str, s3: S3Server) -> None:
    url = s3.url(s3.bucket())
    async with Runtime(db, actors=[Account], replicate=url) as rt:
        await load(rt, 60)
        await rt.ask("Account/0", GetBalance())
        await until(lambda: replicated(rt), 15, "replicated")
        report = await anyio.to_thread.run_sync(
            lambda: drill(db, url, Registry([Account]), monitor=lambda: rt.replication)
        )
        statistics = rt.statistics()
    assert report.ok, report.problems
    assert report.problems == () and report.causes == frozenset()
    assert report.actors == 5 and report.steps == 61
    assert report.replica_position == report.live_position > 0
    assert report.behind.entries == 0 and report.behind.seconds == 0.0
    assert report.behind.commits == statistics.replication.commits_at_risk == 0  # type: ignore[union-attr]
    assert report.entries == 60 * 3 + 2  # message, event, reply per deposit; no event for the balance
    assert not [name for name in os.listdir(os.path.dirname(db)) if name.startswith(".stele-drill-")]
    # The command says the same, and exits 0.
    done = cli("drill", "--db", db, "--replica", url, "--module", "tests.models", "--json")
    answer = json.loads(done.stdout)
    assert answer["ok"] is True and answer["replica_position"] == report.replica_position


async def test_a_corrupted_ltx_file_fails_naming_the_checksum(db: str, s3: S3Server) -> None:
    bucket = s3.bucket()
    url = s3.url(bucket)
    async with Runtime(db, actors=[Account], replicate=url) as rt:
        await load(rt, 30)
        await until(lambda: replicated(rt), 15, "replicated")
    assert drill(db, url, Registry([Account])).ok  # sound before the damage
    assert corrupt_newest_ltx(s3, bucket)
    report = drill(db, url, Registry([Account]))
    assert not report.ok
    assert report.causes == {"restore"}
    # Litestream names a flipped byte in a page's data a checksum mismatch, and one in a
    # page's header or the framing of its compressed block a page it cannot decode: which
    # one the middle byte hits depends on how the pages compressed (a journal with
    # auto_vacuum's pointer-map pages, mostly zeros, hits the headers more often).
    damaged = re.compile(r"checksum mismatch|decode page \d+")
    assert damaged.search(report.problems[0].detail), report.problems[0].detail
    done = cli("drill", "--db", db, "--replica", url, "--module", "tests.models", check=False)
    assert done.returncode == 1
    assert "restore" in done.stdout and damaged.search(done.stdout), done.stdout


async def test_a_replica_that_stopped_100_commits_ago_fails_as_stale(db: str, s3: S3Server) -> None:
    url = s3.url(s3.bucket())
    async with Runtime(db, actors=[Account], replicate=url) as rt:
        await load(rt, 20)
        await until(lambda: replicated(rt), 15, "replicated")
        replication = rt.replicator
        assert replication is not None and replication.litestream is not None
        replication.litestream.kill(restart=False)  # replication stops here
        store = rt.store
        assert isinstance(store, Store)
        commits = store.commits
        assert commits is not None
        before = commits.count
        while commits.count - before < 100:
            await rt.ask("Account/0", Deposit(1))
        made = commits.count - before
        await until(lambda: rt.replication.oldest_at_risk_s > 0.5, 10, "the oldest commit at risk ages")  # type: ignore[union-attr]
        report = await anyio.to_thread.run_sync(
            lambda: drill(db, url, Registry([Account]), max_behind_s=0.5, monitor=lambda: rt.replication)
        )
    assert not report.ok
    assert report.causes == {"stale"}
    assert report.behind.commits == made == 100
    assert report.behind.entries == 3 * made  # each ask: message, event, reply
    assert report.behind.seconds > 0.5
    assert report.live_position - report.replica_position == report.behind.entries
    problem = report.problems[0]
    assert "100 commit(s) at risk" in problem.detail and f"{report.behind.entries} entries" in problem.detail
    assert problem.position == report.replica_position + 1


async def test_code_that_diverges_fails_naming_actor_and_position(db: str, s3: S3Server, tmp_path: Path) -> None:
    url = s3.url(s3.bucket())
    async with Runtime(db, actors=[Account], replicate=url) as rt:
        await load(rt, 10)
        await until(lambda: replicated(rt), 15, "replicated")
    changed = tmp_path / "changed_models.py"
    changed.write_text(
        (ROOT / "tests" / "models.py")
        .read_text()
        .replace("self.emit(Deposited(msg.amount))", "self.emit(Deposited(msg.amount + 1))")
    )
    report = drill(db, url, Registry(actor_classes(load_module(str(changed)))))
    assert not report.ok
    assert report.causes == {"divergence"}
    assert {p.actor for p in report.problems} == {f"Account/{k}" for k in range(5)}  # each actor's first step
    first = min(report.problems, key=lambda p: p.position or 0)
    assert first.position is not None and "Deposited" in first.detail
    done = cli("drill", "--db", db, "--replica", url, "--module", str(changed), "--json", check=False)
    assert done.returncode == 1
    answer = json.loads(done.stdout)
    assert {p["cause"] for p in answer["problems"]} == {"divergence"}


def test_serve_drills_on_a_schedule_and_a_failing_drill_is_an_error(db: str, tmp_path: Path) -> None:
    replica = str(tmp_path / "replica")
    server = Server(db, "--replicate", replica, "--drill-every", "1s")
    try:
        assert request(f"{server.url}/actors/Account/a/deposit", {"amount": 5}) == (200, 5)

        def last_drill() -> Any:
            status, body = request(f"{server.url}/status")
            assert status == 200
            return body["drill"]

        deadline = time.monotonic() + 60
        while (drills := last_drill()) is None or not drills["last"]["ok"]:
            assert time.monotonic() < deadline, f"no passing drill: {drills}"
            time.sleep(0.2)
        _, metrics = request(f"{server.url}/metrics")
        assert re.search(r"^stele_drill_ok 1\.0$", metrics, re.M), metrics
        assert re.search(r"^stele_drill_runs_total [1-9]", metrics, re.M), metrics
        assert request(f"{server.url}/health")[1]["status"] == "ok"
        # Damage every LTX file the replica holds: the next restore reads one of them.
        for directory, _, names in os.walk(replica):
            for name in names:
                if name.endswith(".ltx"):
                    path = os.path.join(directory, name)
                    data = bytearray(Path(path).read_bytes())
                    data[-1] ^= 0xFF
                    Path(path).write_bytes(bytes(data))
        failures = drills["failures"]
        while (drills := last_drill()) is None or drills["failures"] == failures:
            assert time.monotonic() < deadline + 60, f"no failing drill: {drills}"
            time.sleep(0.2)
        assert not drills["last"]["ok"]
        health = request(f"{server.url}/health")
        assert health[0] == 200 and health[1]["status"] == "degraded"
        assert any("restore drill failed" in reason for reason in health[1]["degraded"])
        _, metrics = request(f"{server.url}/metrics")
        assert re.search(r"^stele_drill_ok 0\.0$", metrics, re.M), metrics
        assert re.search(r'^stele_drill_problems\{cause="restore"\} [1-9]', metrics, re.M), metrics
    finally:
        server.proc.send_signal(signal.SIGTERM)
        _, err = server.proc.communicate(timeout=60)
    assert "ERROR stele.drill: restore drill FAILED" in err, err
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".stele-drill-")]


@pytest.mark.parametrize("value", ["0", "-5s", "soon", "5 parsecs"])
def test_a_bad_drill_interval_is_refused_by_name(db: str, value: str) -> None:
    done = cli("serve", "tests.models", "--db", db, f"--drill-every={value}", check=False)
    assert done.returncode == 2 and "a duration such as 90s" in done.stderr and not os.path.exists(db)


async def test_a_restored_file_that_is_damaged_or_foreign_is_an_integrity_problem(db: str, tmp_path: Path) -> None:
    async with Runtime(db, actors=[Account]) as rt:
        await rt.ask("Account/a", Deposit(5))
    newer, damaged = tmp_path / "newer.db", tmp_path / "damaged.db"
    newer.write_bytes(Path(db).read_bytes())
    conn = apsw.Connection(str(newer))
    conn.execute(f"PRAGMA user_version = {storage.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(storage.SchemaError, match="has schema version"):
        verify(str(newer))
    data = bytearray(Path(db).read_bytes())
    data[100:] = b"\xa5" * (len(data) - 100)  # the header survives, every page is garbage
    damaged.write_bytes(bytes(data))
    with pytest.raises(storage.IntegrityError, match=r"damaged\.db"):
        verify(str(damaged))
    assert verify(db).integrity == "ok"
