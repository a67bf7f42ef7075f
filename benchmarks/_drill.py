"""The restore drill of a 1,000,000-event journal replicated to a moto S3 server on 127.0.0.1.

The journal is synthesized as the runtime writes it (10,000 actors of 100
events, steps of 10 events, a snapshot every 50), replicated whole (a
replicated acknowledgement waits for it), then drilled: restored, every
checksum checked, every actor compared with the live journal, replayed and
rebuilt.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import anyio

from runtime import Registry, Runtime, drill
from tests.s3server import CREDENTIALS, S3Server

from ._model import Counter, Total, fresh, synthesize

Result = dict[str, Any]


async def _replicate(db: str, url: str) -> None:
    async with Runtime(db, actors=[Counter], replicate=url, durability="replicated") as rt:
        await rt.ask("Counter/0", Total(), timeout=300)  # acknowledged once all of it is in the bucket


def run(workdir: Path, events: int = 1_000_000) -> Result:
    for key, value in CREDENTIALS.items():
        os.environ.setdefault(key, value)
    server = S3Server()
    try:
        db = fresh(str(workdir / "drill.db"))
        actors = 10_000
        synthesize(db, actors, events // actors, snapshot_every=50)
        url = server.url(server.bucket())
        anyio.run(_replicate, db, url)
        t0 = time.perf_counter()
        report = drill(db, url, Registry([Counter]), workdir=str(workdir))
        seconds = time.perf_counter() - t0
        assert report.ok, report.problems
        assert report.actors == actors and report.entries >= events
        t = report.timings
        return {
            "events": events,
            "entries": report.entries,
            "journal_mb": os.path.getsize(db) / 1e6,
            "drill_s": seconds,
            "restore_s": t.restore_s,
            "compare_s": t.compare_s,
            "replay_s": t.replay_s,
            "rebuild_s": t.rebuild_s,
        }
    finally:
        server.stop()
