"""The replication watchdog: the journal advances, the replica does not, and that is said at
once: a warning naming how long and how much, ``rt.replication.stalled``, ``/health``
degraded and a metric. Real Litestream, real moto S3 on 127.0.0.1: a Litestream that
hangs (SIGSTOP), one that exits, and a bucket that accepts nothing."""

from __future__ import annotations

import logging
import os
import re
import signal
from collections.abc import Callable

import anyio
import anyio.to_thread
import pytest

from runtime import Runtime

from .models import Account, Deposit
from .s3server import S3Server
from .served import request
from .test_http import http_app
from .test_replication import replicated, until

STALL_S = 1.0


def hang_litestream(rt: Runtime, s3: S3Server, bucket: str) -> Callable[[], None]:
    litestream = rt.replicator.litestream  # type: ignore[union-attr]
    assert litestream is not None and litestream.pid is not None
    pid = litestream.pid
    os.kill(pid, signal.SIGSTOP)
    return lambda: os.kill(pid, signal.SIGCONT)


def litestream_exits(rt: Runtime, s3: S3Server, bucket: str) -> Callable[[], None]:
    litestream = rt.replicator.litestream  # type: ignore[union-attr]
    assert litestream is not None
    litestream.kill(restart=False)  # it exits and nothing brings it back
    return lambda: None


def bucket_accepts_nothing(rt: Runtime, s3: S3Server, bucket: str) -> Callable[[], None]:
    client = s3.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", ()):
            client.delete_object(Bucket=bucket, Key=item["Key"])
    client.delete_bucket(Bucket=bucket)  # every upload and every listing now fails
    return lambda: client.create_bucket(Bucket=bucket)


@pytest.mark.parametrize(
    ("fault", "recovers"),
    [(hang_litestream, True), (litestream_exits, False), (bucket_accepts_nothing, True)],
    ids=["litestream-hangs", "litestream-exits", "bucket-accepts-nothing"],
)
async def test_a_stall_is_said_at_once(
    db: str,
    s3: S3Server,
    caplog: pytest.LogCaptureFixture,
    fault: Callable[[Runtime, S3Server, str], Callable[[], None]],
    recovers: bool,
) -> None:
    caplog.set_level(logging.WARNING, logger="stele.replication")
    bucket = s3.bucket()
    async with Runtime(db, actors=[Account], replicate=s3.url(bucket), stall_after_s=STALL_S) as rt:
        await rt.tell("Account/a", Deposit(1))
        await until(lambda: replicated(rt), 15, "replicated")
        status = rt.replication
        assert status is not None and not status.stalled and status.stall_after_s == STALL_S
        undo = fault(rt, s3, bucket)
        try:
            async with http_app(rt) as base:
                for _ in range(5):  # the journal advances
                    await rt.tell("Account/a", Deposit(1))
                await until(lambda: rt.replication.stalled, 30, "a stall reported")  # type: ignore[union-attr]
                status = rt.replication
                assert status is not None
                assert status.stalled_for_s > STALL_S and status.commits_at_risk >= 5
                pattern = re.compile(r"replication stalled: .* not advanced for ([0-9.]+) s .*: (\d+) commit")
                await until(lambda: pattern.search(caplog.text) is not None, 5, "a stall warning")
                message = pattern.search(caplog.text)
                assert message is not None
                assert float(message.group(1)) >= STALL_S and int(message.group(2)) >= 5  # shown rounded
                code, health = await anyio.to_thread.run_sync(request, f"{base}/health")
                assert code == 200 and health["status"] == "degraded", health
                assert any(reason.startswith("replication stalled") for reason in health["degraded"]), health
                _, metrics = await anyio.to_thread.run_sync(request, f"{base}/metrics")
                assert re.search(r"^stele_replication_stalled 1\.0$", metrics, re.M), metrics
                if not recovers:
                    return
                undo()
                undo = lambda: None  # noqa: E731
                await rt.tell("Account/a", Deposit(1))
                await until(lambda: not rt.replication.stalled, 60, "the stall over")  # type: ignore[union-attr]
                await until(lambda: "replication resumed" in caplog.text, 5, "a resumption message")
                await until(lambda: replicated(rt), 60, "caught up")
                code, health = await anyio.to_thread.run_sync(request, f"{base}/health")
                assert code == 200 and health["status"] == "ok", health
        finally:
            undo()


async def test_an_idle_journal_is_not_stalled(db: str, s3: S3Server) -> None:
    """The replica standing still is a stall only while commits wait for it."""
    async with Runtime(db, actors=[Account], replicate=s3.url(s3.bucket()), stall_after_s=STALL_S) as rt:
        await rt.tell("Account/a", Deposit(1))
        await until(lambda: replicated(rt), 15, "replicated")
        litestream = rt.replicator.litestream  # type: ignore[union-attr]
        assert litestream is not None and litestream.pid is not None
        os.kill(litestream.pid, signal.SIGSTOP)  # it could not upload anything now
        try:
            await anyio.sleep(STALL_S * 2)
            status = rt.replication
            assert status is not None and not status.stalled and status.stalled_for_s == 0.0
        finally:
            os.kill(litestream.pid, signal.SIGCONT)


def test_a_bad_stall_threshold_is_refused_by_name(db: str) -> None:
    with pytest.raises(ValueError, match="stall_after_s must be more than 0 s"):
        Runtime(db, actors=[Account], replicate="/nowhere", stall_after_s=0)
