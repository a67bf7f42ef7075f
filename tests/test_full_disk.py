"""A real full disk: the journal on a small tmpfs, filled up, then freed.

Needs root to mount (CI runs as root); skipped with the reason otherwise.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from runtime import Runtime

from .clients import ACTORS, after_healing, call, definitely_failed, processed_if_acknowledged
from .histories import audit, integrity, recover
from .models import Recorder
from .report import add

DISK = "8m"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=True)


def fill(path: Path) -> int:
    """Write ``path`` until the disk is full; return the bytes written."""
    written = 0
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                written += f.write(chunk) or 0
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
        # The last partial chunk: byte by byte is too slow; halve until nothing fits.
        size = len(chunk) // 2
        while size:
            try:
                written += f.write(b"\0" * size) or 0
            except OSError:
                size //= 2
    return written


async def test_a_full_disk_refuses_clearly_loses_nothing_and_recovers(disk: Path, tmp_path: Path) -> None:
    db, trace = str(disk / "journal.db"), str(tmp_path / "trace")  # the effects' trace lives elsewhere
    Recorder.trace_path = trace
    outcomes: dict[int, str] = {}
    errors: Counter[str] = Counter()
    async with Runtime(db, actors=[Recorder]) as rt:
        for i in range(30):
            outcomes[i] = await call(rt, i, timeout=5)
        assert set(outcomes.values()) == {"ok"}
        filler = disk / "filler"
        fill(filler)
        # Every call now fails clearly or is refused; none hangs, none is lost.
        # Clients keep calling, eight at a time: while one probes the journal
        # (its commit retried, then reported), the others are refused at once.
        full = range(30, 30 + 40)

        async def client(j: int) -> None:
            outcomes[j] = await call(rt, j)

        with anyio.fail_after(60):
            for burst in range(full.start, full.stop, 8):
                async with anyio.create_task_group() as tg:
                    for j in range(burst, min(burst + 8, full.stop)):
                        tg.start_soon(client, j)
        said = Counter(outcomes[j] for j in full)
        assert said["ok"] < len(full), f"nothing failed on a full disk: {said}"  # some pages may still fit
        assert said["refused"] > 0, f"no backpressure while the disk was full: {said}"
        assert rt.journal_failing is not None and "full" in rt.journal_failing  # /health, /status, /metrics say so
        errors.update(said)
        i = full[-1] + 1
        filler.unlink()  # space is back
        for j in range(i, i + 30):
            outcomes[j] = await after_healing(rt, j)
        assert rt.journal_failing is None
    assert integrity(db) == "ok"
    live = await recover(db, ACTORS)
    history = audit(db, trace)
    assert live == {a: history.events.get(a, []) for a in ACTORS}
    assert not history.duplicated()
    seen = set(history.processed)
    assert processed_if_acknowledged(outcomes) <= seen
    assert not definitely_failed(outcomes) & seen
    add("real full disk (tmpfs)", calls=len(outcomes), **{f"while full: {k}": n for k, n in errors.items()})
