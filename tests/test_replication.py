"""G7 replication is measured: the real Litestream binary, a real S3 server on
127.0.0.1 (moto), no mocks. Round trips, outages, a dead Litestream, replicated
acknowledgements, the loss window, bad configuration."""

from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from actors import ReplicationError, ReplicationTimeout
from runtime import Runtime
from storage import Journal, OperationalError, Store, restore

from .conftest import dump
from .models import Account, Deposit, GetBalance
from .s3server import CREDENTIALS, S3Server


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.05)
    assert predicate(), what


def replicated(rt: Runtime) -> bool:
    status = rt.replication
    return status is not None and status.commits_at_risk == 0


async def load(rt: Runtime, count: int, actors: int = 5) -> None:
    async with anyio.create_task_group() as tg:
        for i in range(count):
            tg.start_soon(rt.tell, f"Account/{i % actors}", Deposit(i + 1))


async def balances(db: str, actors: int = 5) -> list[int]:
    async with Runtime(db, actors=[Account]) as rt:
        return [await rt.ask(f"Account/{k}", GetBalance()) for k in range(actors)]


def remove_journal(db: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.remove(db + suffix)
    shutil.rmtree(os.path.join(os.path.dirname(db), "." + os.path.basename(db) + "-litestream"), ignore_errors=True)


async def test_round_trip_through_a_bucket_restores_every_row_and_state(db: str, s3: S3Server, tmp_path: Path) -> None:
    url = s3.url(s3.bucket())
    async with Runtime(db, actors=[Account], replicate=url) as rt:
        await load(rt, 300)
        for k in range(5):
            await rt.ask(f"Account/{k}", GetBalance())
        await until(lambda: replicated(rt), 15, "everything replicated")
        status = rt.replication
        assert status is not None and status.litestream_running and status.replicated_at is not None
    before = dump(db)
    expected = await balances(db)
    restored = str(tmp_path / "restored.db")
    report = restore(url, restored)
    assert report.integrity == "ok" and report.actors == 5
    assert report.last_position == max(row[0] for row in before["journal"])
    after = dump(restored)
    for table in ("journal", "inbox", "snapshots", "actors"):
        assert after[table] == before[table], table
    assert await balances(restored) == expected == [sum(range(k + 1, 301, 5)) for k in range(5)]


async def test_a_local_directory_is_a_replica_too(db: str, tmp_path: Path) -> None:
    replica = str(tmp_path / "replica")
    async with Runtime(db, actors=[Account], replicate=replica, durability="replicated") as rt:
        await rt.tell("Account/0", Deposit(7))  # returns once it is in the replica
        status = rt.replication
        assert status is not None and status.replicated_at is not None
    restored = str(tmp_path / "restored.db")
    restore(replica, restored)
    assert await balances(restored, 1) == [7]
    with pytest.raises(OperationalError, match="restore never overwrites"):
        restore(replica, restored)


async def test_restore_to_a_point_in_time_by_timestamp_or_txid(db: str, s3: S3Server, tmp_path: Path) -> None:
    url = s3.url(s3.bucket())
    async with Runtime(db, actors=[Account], replicate=url, durability="replicated") as rt:
        await rt.tell("Account/0", Deposit(1))
        replication = rt.replicator
        assert replication is not None
        first = replication.reader.newest()
        assert first is not None
        await anyio.sleep(1.2)  # the next LTX file carries a later timestamp
        between = datetime.datetime.now(datetime.UTC)
        await anyio.sleep(1.2)
        await rt.tell("Account/0", Deposit(10))
    by_time, by_txid, latest = (str(tmp_path / f"{name}.db") for name in ("time", "txid", "latest"))
    restore(url, by_time, timestamp=between.isoformat())
    restore(url, by_txid, txid=first.max_txid)
    restore(url, latest)
    assert await balances(by_time, 1) == await balances(by_txid, 1) == [1]
    assert await balances(latest, 1) == [11]


async def test_restore_if_missing_starts_from_the_replica(db: str, s3: S3Server) -> None:
    url = s3.url(s3.bucket())
    async with Runtime(db, actors=[Account], replicate=url) as rt:
        await load(rt, 50)
        await rt.ask("Account/0", GetBalance())
        await until(lambda: replicated(rt), 15, "everything replicated")
    expected = await balances(db)
    remove_journal(db)
    async with Runtime(db, actors=[Account], replicate=url, restore_if_missing=True) as rt:
        assert [await rt.ask(f"Account/{k}", GetBalance()) for k in range(5)] == expected
        await rt.tell("Account/0", Deposit(1000))  # and it serves (and replicates) on
        await until(lambda: replicated(rt), 15, "replicated again")


async def test_an_outage_shows_as_growing_lag_then_recovers_with_nothing_lost(
    db: str, own_s3: S3Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = own_s3.url(own_s3.bucket())
    caplog.set_level(logging.WARNING, logger="stele.replication")
    async with Runtime(db, actors=[Account], replicate=url, lag_warning_s=1.0) as rt:
        await load(rt, 20)
        await until(lambda: replicated(rt), 15, "replicated before the outage")
        with own_s3.paused():
            for _ in range(10):
                await rt.tell("Account/0", Deposit(1))
                await anyio.sleep(0.2)
            status = rt.replication
            assert status is not None
            assert status.commits_at_risk >= 10
            assert status.oldest_at_risk_s > 1.5
            await until(lambda: "replication lags" in caplog.text, 5, "a lag warning")
        await until(lambda: replicated(rt), 30, "caught up after the outage")
        await until(lambda: "caught up" in caplog.text, 5, "a recovery message")
        await rt.ask("Account/0", GetBalance())
        await until(lambda: replicated(rt), 15, "the last step replicated")
    restored = str(tmp_path / "restored.db")
    restore(url, restored)
    assert await balances(restored) == await balances(db)


async def test_a_killed_litestream_is_restarted_and_the_outage_reported(
    db: str, s3: S3Server, caplog: pytest.LogCaptureFixture
) -> None:
    url = s3.url(s3.bucket())
    caplog.set_level(logging.WARNING, logger="stele.replication")
    async with Runtime(db, actors=[Account], replicate=url) as rt:
        await rt.tell("Account/a", Deposit(1))
        await until(lambda: replicated(rt), 15, "replicated")
        replication = rt.replicator
        assert replication is not None and replication.litestream is not None
        replication.litestream.kill()
        await until(lambda: not rt.replication.litestream_running, 5, "reported down")  # type: ignore[union-attr]
        await rt.tell("Account/a", Deposit(2))
        await until(lambda: rt.replication.restarts >= 1, 10, "restarted")  # type: ignore[union-attr]
        await until(lambda: replicated(rt), 20, "replicating again")
        status = rt.replication
        assert status is not None and status.litestream_running
        assert "exited" in (status.last_error or "")
    assert "restarting it" in caplog.text


async def test_a_replicated_tell_survives_losing_the_local_file(db: str, s3: S3Server, tmp_path: Path) -> None:
    url = s3.url(s3.bucket())
    rt = await Runtime(db, actors=[Account], replicate=url).__aenter__()
    for amount in (3, 4):
        await rt.tell("Account/a", Deposit(amount), durability="replicated", timeout=10)
    await rt.abandon()  # the host dies right after the acknowledgement: no final sync
    remove_journal(db)
    restored = str(tmp_path / "restored.db")
    restore(url, restored)
    async with Runtime(restored, actors=[Account]) as rt2:
        assert await rt2.ask("Account/a", GetBalance()) == 7


async def test_a_replicated_ack_times_out_during_an_outage_but_stays_durable_locally(db: str, own_s3: S3Server) -> None:
    url = own_s3.url(own_s3.bucket())
    async with Runtime(db, actors=[Account], replicate=url, durability="replicated") as rt:
        await rt.tell("Account/a", Deposit(1))
        with own_s3.paused():
            with pytest.raises(ReplicationTimeout, match="durable locally but was not confirmed"):
                await rt.tell("Account/a", Deposit(2), timeout=2)
            with pytest.raises(ReplicationTimeout):
                await rt.ask("Account/a", GetBalance(), timeout=2)
        assert await rt.ask("Account/a", GetBalance(), timeout=30) == 3
    with Journal.open(db) as journal:
        assert len(list(journal.entries("Account/a", kind="event"))) == 2


async def test_the_loss_window_is_exactly_what_the_monitor_reported(db: str, s3: S3Server, tmp_path: Path) -> None:
    url = s3.url(s3.bucket())
    rt = await Runtime(db, actors=[Account], replicate=url).__aenter__()
    async with anyio.create_task_group() as tg:

        async def writer() -> None:
            for i in range(400):
                await rt.tell(f"Account/{i % 5}", Deposit(1))
                await anyio.sleep(0.002)

        tg.start_soon(writer)
        await anyio.sleep(1.3)
        replication = rt.replicator
        assert replication is not None and replication.litestream is not None
        replication.litestream.kill(restart=False)  # uploads stop here
        tg.cancel_scope.cancel()
    assert replication is not None
    replication.refresh()  # the monitor's view of that moment, brought up to date
    status = replication.status()
    store = rt.store
    assert isinstance(store, Store)
    commits = store.commits
    assert commits is not None
    made = commits.count
    await rt.abandon()
    restored = str(tmp_path / "restored.db")
    report = restore(url, restored)
    # Everything confirmed is there; nothing reported at risk is.
    assert report.last_position == status.replicated_position
    assert made - commits.replicated_seq == status.commits_at_risk
    print(f"loss window: {status.commits_at_risk} commits at risk, {status.oldest_at_risk_s:.2f} s")


async def test_litestream_stopped_just_after_start_still_replicates_everything(
    db: str, s3: S3Server, tmp_path: Path
) -> None:
    url = s3.url(s3.bucket())
    async with Runtime(db, actors=[Account], replicate=url) as rt:
        for i in range(20):
            await rt.tell(f"Account/{i % 5}", Deposit(1))
        await rt.ask("Account/0", GetBalance())
    # Closing at once: the runtime asks for a final sync before SIGTERM.
    restored = str(tmp_path / "restored.db")
    restore(url, restored)
    assert sum(await balances(restored)) == 20


async def test_checkpoints_are_left_to_litestream_while_it_runs(db: str, tmp_path: Path) -> None:
    async with Runtime(db, actors=[Account], replicate=str(tmp_path / "replica")) as rt:
        assert isinstance(rt.store, Store) and rt.store.writer_pragma("wal_autocheckpoint") == 0
    async with Runtime(db, actors=[Account]) as rt:
        assert isinstance(rt.store, Store) and rt.store.writer_pragma("wal_autocheckpoint") == 1000


@pytest.mark.parametrize(
    ("make_url", "kwargs", "message"),
    [
        (lambda s3: s3.url(s3.bucket()), {"litestream": "/nonexistent/litestream"}, "binary was not found"),
        (lambda s3: s3.url("no-such-bucket"), {}, "cannot reach bucket 'no-such-bucket'"),
        (
            lambda s3: f"s3://b-1/j?endpoint=http://127.0.0.1:{_closed_port()}&region=us-east-1&forcePathStyle=true",
            {},
            "cannot reach bucket 'b-1'",
        ),
        (lambda s3: "ftp://example/x", {}, "only s3:// URLs and local directories"),
    ],
)
async def test_bad_configuration_fails_at_start_with_a_clear_error(
    db: str, s3: S3Server, make_url: Callable[[S3Server], str], kwargs: dict[str, str], message: str
) -> None:
    with anyio.fail_after(30):  # no hang
        with pytest.raises(ReplicationError, match=message):
            async with Runtime(db, actors=[Account], replicate=make_url(s3), **kwargs):  # type: ignore[arg-type]
                pass
    async with Runtime(db, actors=[Account]) as rt:  # the journal was released
        await rt.ask("Account/a", GetBalance())


def _closed_port() -> int:
    from .s3server import free_port

    return free_port()


async def test_a_litestream_run_outside_is_monitored(db: str, s3: S3Server) -> None:
    from storage import Litestream, ReplicaTarget

    url = s3.url(s3.bucket())
    async with Runtime(db, actors=[Account]) as rt:  # create the journal first
        await rt.tell("Account/a", Deposit(1))
    outside = Litestream(os.path.abspath(db), ReplicaTarget.parse(url))
    outside.start()
    try:
        async with Runtime(db, actors=[Account], replicate=url, litestream_socket=outside.control.path) as rt:
            await rt.tell("Account/a", Deposit(2), durability="replicated", timeout=15)
            status = rt.replication
            assert status is not None and status.litestream_running and status.replicated_at is not None
            outside.kill(restart=False)  # nobody restarts it: it is not ours
            await until(lambda: not rt.replication.litestream_running, 5, "reported down")  # type: ignore[union-attr]
    finally:
        outside.stop()


async def test_under_steady_load_the_window_stays_near_the_sync_interval(db: str, s3: S3Server) -> None:
    ages: list[float] = []
    async with Runtime(db, actors=[Account], replicate=s3.url(s3.bucket())) as rt:
        await rt.tell("Account/0", Deposit(1))
        await until(lambda: replicated(rt), 15, "first upload")
        for i in range(80):  # 4 s at 20 commits/s
            await rt.tell(f"Account/{i % 5}", Deposit(1))
            status = rt.replication
            assert status is not None
            ages.append(status.oldest_at_risk_s)
            await anyio.sleep(0.05)
    # Litestream's 1 s timers plus the monitor's nudge; generous for a loaded CI machine.
    assert max(ages) < 5.0, ages
    assert sorted(ages)[len(ages) // 2] < 1.5, ages


async def test_bad_credentials_fail_at_start_with_a_clear_error(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # moto checks signatures once its first few (set-up) requests are done.
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    server = S3Server(env={"INITIAL_NO_AUTH_ACTION_COUNT": "4"})
    try:
        import boto3

        iam = boto3.client("iam", endpoint_url=server.endpoint, region_name="us-east-1")
        iam.create_user(UserName="stele")
        iam.put_user_policy(
            UserName="stele",
            PolicyName="s3",
            PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
            ),
        )
        key = iam.create_access_key(UserName="stele")["AccessKey"]
        good = boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            region_name="us-east-1",
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
        )
        good.create_bucket(Bucket="stele-auth")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        with anyio.fail_after(30), pytest.raises(ReplicationError, match=r"cannot reach bucket 'stele-auth'.*403"):
            async with Runtime(db, actors=[Account], replicate=server.url("stele-auth")):
                pass
    finally:
        server.stop()


async def test_the_monitor_asks_for_fewer_than_two_extra_uploads_a_second(db: str, s3: S3Server) -> None:
    from storage._replication import MIN_NUDGE_GAP_S

    async with Runtime(db, actors=[Account], replicate=s3.url(s3.bucket())) as rt:
        await rt.tell("Account/0", Deposit(1))
        await until(lambda: replicated(rt), 15, "first upload")
        replication = rt.replicator
        assert replication is not None
        nudges, began = replication.nudges, time.monotonic()
        for i in range(150):  # 3 s of steady commits: each one at risk long enough to be nudged for
            await rt.tell(f"Account/{i % 5}", Deposit(1))
            await anyio.sleep(0.02)
        elapsed = time.monotonic() - began
        asked = replication.nudges - nudges
    assert asked >= 1  # it did ask
    assert asked <= elapsed / MIN_NUDGE_GAP_S + 1, (asked, elapsed)
