"""Replication benchmarks: lag under load, recovery after an outage, replicated
asks, restore. Against a real moto S3 server on 127.0.0.1, Litestream's
default intervals (1 s)."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import anyio

from runtime import Runtime
from storage import restore
from tests.s3server import CREDENTIALS, S3Server

from ._model import Counter, Inc, Total, fresh, synthesize

Result = dict[str, Any]
FRACTIONS = (0.25, 0.5, 1.0)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else 0.0


WARM_UP_S = 1.0
"""Samples until a second after Litestream's first upload (its start-up snapshot) are not steady state."""


async def sample_lag(rt: Runtime, samples: list[tuple[int, float]], stop: anyio.Event) -> None:
    # Steady state: from WARM_UP_S after Litestream's first upload confirmed.
    while (rt.replication is None or rt.replication.replicated_at is None) and not stop.is_set():
        await anyio.sleep(0.05)
    await anyio.sleep(WARM_UP_S)
    while not stop.is_set():
        status = rt.replication
        assert status is not None
        samples.append((status.commits_at_risk, status.oldest_at_risk_s))
        await anyio.sleep(0.05)


async def paced_load(rt: Runtime, rate: float, seconds: float, actors: int = 1000) -> int:
    """Tells at about ``rate`` per second for ``seconds``, from ``actors`` senders."""
    interval = actors / rate
    sent = 0
    deadline = time.monotonic() + seconds

    async def sender(a: int) -> None:
        nonlocal sent
        next_at = time.monotonic() + interval * a / actors
        while True:
            now = time.monotonic()
            if now >= deadline:
                return
            if next_at > now:
                await anyio.sleep(next_at - now)
            await rt.tell(f"Counter/{a}", Inc(1))
            sent += 1
            next_at += interval

    async with anyio.create_task_group() as tg:
        for a in range(actors):
            tg.start_soon(sender, a)
    return sent


async def lag_under_load(workdir: Path, s3: S3Server, fsync_rate: float, seconds: float) -> Result:
    results: Result = {"fsync_rate": fsync_rate}
    for fraction in FRACTIONS:
        db = fresh(str(workdir / f"lag-{fraction}.db"))
        samples: list[tuple[int, float]] = []
        async with Runtime(db, actors=[Counter], replicate=s3.url(s3.bucket())) as rt:
            stop = anyio.Event()
            replicator = rt.replicator
            assert replicator is not None
            async with anyio.create_task_group() as tg:
                tg.start_soon(sample_lag, rt, samples, stop)
                nudges, txid, began = replicator.nudges, replicator.status().remote_txid, time.monotonic()
                sent = await paced_load(rt, fsync_rate * fraction, seconds)
                elapsed = time.monotonic() - began
                # Each sync the monitor asks for is at most one extra LTX file and upload.
                nudged = (replicator.nudges - nudges) / elapsed
                uploads = (replicator.status().remote_txid - txid) / elapsed
                stop.set()
        ages = [age for _, age in samples]
        counts = [float(count) for count, _ in samples]
        results[f"{int(fraction * 100)}%"] = {
            "rate": sent / seconds,
            "age_p50_s": percentile(ages, 0.5),
            "age_p99_s": percentile(ages, 0.99),
            "commits_p50": percentile(counts, 0.5),
            "commits_p99": percentile(counts, 0.99),
            "extra_uploads_per_s": nudged,
            "uploads_per_s": uploads,
        }
    return results


async def outage_recovery(workdir: Path, fsync_rate: float) -> Result:
    """Pause the bucket for 5 s under half load; time from its return to steady lag."""
    server = S3Server()
    try:
        db = fresh(str(workdir / "outage.db"))
        async with Runtime(db, actors=[Counter], replicate=server.url(server.bucket())) as rt:

            async def load() -> None:
                await paced_load(rt, fsync_rate * 0.5, 30)

            async with anyio.create_task_group() as tg:
                tg.start_soon(load)
                await anyio.sleep(3)
                with server.paused():
                    await anyio.sleep(5)
                    status = rt.replication
                    assert status is not None
                    peak = status.oldest_at_risk_s
                returned = time.monotonic()
                while True:
                    status = rt.replication
                    assert status is not None
                    if status.oldest_at_risk_s <= 1.5 or time.monotonic() - returned > 60:
                        break
                    await anyio.sleep(0.05)
                recovered = time.monotonic() - returned
                tg.cancel_scope.cancel()
        return {"lag_at_end_of_outage_s": peak, "back_to_steady_s": recovered}
    finally:
        server.stop()


async def replicated_asks(workdir: Path, s3: S3Server, count: int = 200) -> Result:
    db = fresh(str(workdir / "replicated-asks.db"))
    latencies = []
    async with Runtime(db, actors=[Counter], replicate=s3.url(s3.bucket()), durability="replicated") as rt:
        await rt.ask("Counter/r", Inc(1))
        for _ in range(count):
            t0 = time.perf_counter()
            await rt.ask("Counter/r", Inc(1))
            latencies.append(time.perf_counter() - t0)
    return {"p50_ms": statistics.median(latencies) * 1e3, "p99_ms": percentile(latencies, 0.99) * 1e3}


async def restore_time(workdir: Path, s3: S3Server, megabytes: int = 100) -> Result:
    db = fresh(str(workdir / "big.db"))
    actors = 10_000
    per_actor = max(10, int(megabytes * 1.2 * 1e6 / 95 / actors))
    synthesize(db, actors, per_actor, snapshot_every=1000)
    size = os.path.getsize(db) / 1e6
    url = s3.url(s3.bucket())
    async with Runtime(db, actors=[Counter], replicate=url, durability="replicated") as rt:
        await rt.ask("Counter/0", Total(), timeout=120)  # acknowledged once all of it is in the bucket
    target = fresh(str(workdir / "restored.db"))
    t0 = time.perf_counter()
    report = restore(url, target)
    seconds = time.perf_counter() - t0
    assert report.actors == actors and report.integrity == "ok"
    return {"journal_mb": size, "restore_and_verify_s": seconds}


def run(workdir: Path, fsync_rate: float, quick: bool) -> Result:
    for key, value in CREDENTIALS.items():
        os.environ.setdefault(key, value)
    server = S3Server()
    try:
        out: Result = {}
        out["lag"] = anyio.run(lag_under_load, workdir, server, fsync_rate, 3.0 if quick else 6.0)
        out["outage"] = anyio.run(outage_recovery, workdir, fsync_rate)
        out["replicated_ask"] = anyio.run(replicated_asks, workdir, server)
        out["restore"] = anyio.run(restore_time, workdir, server, 20 if quick else 100)
        return out
    finally:
        server.stop()
