"""Power cuts at every crash point of a workload, through the power-loss VFS.

Each crash point runs the same workload (tells and asks to three ``Recorder``
actors, one traced effect per step) in a child forked from a prepared process;
the VFS cuts the power at the N-th sync (or write) and damages what was not
synced. Then, through the default VFS: ``integrity_check`` is ok, a recovery run
consumes whatever is pending, and the history holds: no message processed
twice, no effect run again after its result was journaled, each actor's state
the fold of its journal, and (at ``durability="fsync"``) every acknowledged
message processed.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import LONG_FAULTS
from .histories import audit, integrity, reap
from .powerloss import CUT_EXIT
from .report import add

ROOT = Path(__file__).parent.parent
MESSAGES = 60


class Zygote:
    """The prepared process of ``tests.power_child``: one forked child per job."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.power_child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )

    def __call__(self, **job: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the power-loss child process died"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        """End of input: the prepared process exits; on every path it is reaped, its pipes closed."""
        try:
            assert self.proc.stdin is not None
            with contextlib.suppress(OSError):  # it may have died already
                self.proc.stdin.close()
            self.proc.wait(timeout=30)
        finally:
            reap(self.proc)


@pytest.fixture(scope="module")
def zygote() -> Iterator[Zygote]:
    z = Zygote()
    yield z
    z.close()


def sweep(
    zygote: Zygote,
    tmp_path: Path,
    *,
    durability: str,
    crash_on: str,
    points: int,
    policy: str = "mixed",
    psow: bool | None = None,
    messages: int = MESSAGES,
) -> Counter[str]:
    """Cut the power at up to ``points`` crash points spread over the workload; check each."""
    count = zygote(
        job="run", db=str(tmp_path / "count.db"), trace=str(tmp_path / "count.trace"),
        acks=str(tmp_path / "count.acks"), crash_on=crash_on, crash_at=None, policy=policy,
        seed=0, durability=durability, psow=psow, messages=messages,
    )  # fmt: skip
    assert count["status"] == 0, count
    available = count["syncs" if crash_on == "sync" else "writes"]
    totals: Counter[str] = Counter({"crash points offered": min(points, available)})
    # Exactly min(points, available) crash points, spread evenly: a step of
    # available // points ran up to twice as many (every one of 1,999 syncs for 1,000).
    cuts = range(1, available + 1) if available <= points else [1 + k * available // points for k in range(points)]
    for at in cuts:
        run = tmp_path / f"{crash_on}-{at}"
        run.mkdir()
        db, trace, acks = str(run / "journal.db"), str(run / "trace"), run / "acks"
        result = zygote(
            job="run", db=db, trace=trace, acks=str(acks), crash_on=crash_on, crash_at=at,
            policy=policy, seed=at, durability=durability, psow=psow, messages=messages,
        )  # fmt: skip
        if result["status"] == 0:
            totals["completed before the crash point"] += 1  # group commits vary from run to run
            continue
        assert result["status"] == CUT_EXIT, f"crash point {at}: the workload failed: {result}"
        assert integrity(db) == "ok", f"crash point {at}: the journal is corrupt"
        recovered = zygote(job="recover", db=db, trace=trace)
        assert recovered["status"] == 0, f"crash point {at}: recovery failed"
        history = audit(db, trace)
        assert not history.duplicated(), f"crash point {at}: processed twice: {history.duplicated()}"
        assert recovered["live"] == history.events, f"crash point {at}: live state is not the journal's"
        acked = {int(line.split()[1]) for line in acks.read_text().splitlines()} if acks.exists() else set()
        assert set(history.processed) <= set(range(messages))
        lost = history.lost(acked)
        totals.update(
            {
                "crash points": 1,
                "acknowledged": len(acked),
                "lost": len(lost),
                "crash points with loss": bool(lost),
                "effects checked": history.effects,
            }
        )
    return totals


def test_power_cuts_at_every_sync_lose_no_acknowledged_step(zygote: Zygote, tmp_path: Path, scale: int) -> None:
    # The fast tier's workload offers some 150 syncs: each is a crash point.
    # --long spreads LONG_FAULTS crash points over a workload LONG_SCALE times longer.
    totals = sweep(zygote, tmp_path, durability="fsync", crash_on="sync", points=LONG_FAULTS, messages=MESSAGES * scale)
    add("power loss, fsync, torn sectors, psow=0", **totals)
    assert totals["crash points"] >= 100 * min(scale, 2), totals  # the workload offers that many syncs
    assert totals["crash points"] >= totals["crash points offered"] * 0.7, totals
    assert totals["acknowledged"] > 0
    assert totals["lost"] == 0, totals


def test_power_cuts_with_powersafe_overwrite_lose_acknowledged_steps(
    zygote: Zygote, tmp_path: Path, scale: int
) -> None:
    # The evidence for opening journals with psow=0: the same sweep, with the
    # disk claiming that a torn write cannot damage the rest of its sector (the
    # SQLite default) while the VFS tears whole sectors. SQLite then starts a
    # commit in the sector of the previous commit's last frame, and tearing it
    # loses that acknowledged commit.
    totals = sweep(
        zygote, tmp_path, durability="fsync", crash_on="sync", points=LONG_FAULTS, psow=True, messages=MESSAGES * scale
    )
    add("power loss, fsync, torn sectors, psow=1 (evidence)", **totals)
    assert totals["lost"] > 0, totals


def test_power_cuts_that_drop_unsynced_writes_lose_nothing_acknowledged(
    zygote: Zygote, tmp_path: Path, scale: int
) -> None:
    # The workload offers some 1,400 writes: --long cuts at every one of them.
    points = 100 if scale == 1 else LONG_FAULTS
    totals = sweep(zygote, tmp_path, durability="fsync", crash_on="write", points=points, policy="drop")
    add("power loss, fsync, cut between writes", **totals)
    assert totals["crash points"] >= totals["crash points offered"] * 0.7, totals  # most runs reached their cut
    assert totals["lost"] == 0, totals


def test_power_cuts_at_durability_normal_lose_acknowledged_steps_but_never_corrupt(
    zygote: Zygote, tmp_path: Path, scale: int
) -> None:
    # synchronous=NORMAL syncs the WAL only at checkpoints: a power cut loses
    # what was acknowledged since the last one. Reported, not hidden; and the
    # journal is still consistent (checked by the sweep at every point).
    # Syncing less, the workload writes less (some 875 writes): --long doubles
    # it to offer LONG_FAULTS crash points, and cuts at every write.
    points, messages = (100, MESSAGES) if scale == 1 else (LONG_FAULTS, 2 * MESSAGES)
    totals = sweep(zygote, tmp_path, durability="normal", crash_on="write", points=points, messages=messages)
    add("power loss, durability=normal (loss expected)", **totals)
    assert totals["crash points"] >= totals["crash points offered"] * 0.7, totals
    assert totals["lost"] > 0, "the harness saw no loss where synchronous=NORMAL must lose: it is not cutting"
