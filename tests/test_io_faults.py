"""The N-th I/O operation fails, for every N over a workload (sampled in the fast tier).

Variants: an I/O error or a full disk; once (transient), or from then on
(persistent) until the disk heals, or until the process stops. Each run records
every call's outcome as the client saw it: ``ok``, ``accepted`` (an ask kept in
the inbox with no reply yet), ``fail`` (a definite error) or ``unknown``
(``CommitUnknownError``, a timeout); ``refused`` (backpressure while the journal
fails) counts as a definite failure. Then, through the default
VFS: ``integrity_check`` is ok, a recovery run consumes what is pending, and
every ``ok`` and ``accepted`` was processed exactly once, no ``fail`` at all, no ``unknown``
twice; each effect journaled ran last; the runtime served again once the disk
healed, and never hung.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors import SteleError
from runtime import Runtime
from storage import _writer

from .clients import ACTORS, after_healing, call, definitely_failed, processed_if_acknowledged
from .faults import FaultVFS
from .histories import audit, integrity, recover
from .models import Recorder
from .report import add

MESSAGES = 12


@pytest.fixture
def fault() -> Iterator[FaultVFS]:
    vfs = FaultVFS("iofault")
    yield vfs
    vfs.close()


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    # The writer's back-off before retrying a failed commit, shortened: same
    # retries, same order, so that a persistent fault costs milliseconds.
    monkeypatch.setattr(_writer, "COMMIT_RETRIES", (0.001, 0.002, 0.005))


async def open_runtime(db: str, fault: FaultVFS, totals: Counter[str]) -> Runtime:
    """Open, as many times as a transient fault needs; a persistent one is healed first."""
    for _ in range(3):
        rt = Runtime(db, actors=[Recorder], vfs=fault.name)
        try:
            await rt.__aenter__()
        except SteleError:
            totals["opens refused with a clear error"] += 1
            fault.heal()
            continue
        return rt
    raise AssertionError("the runtime could not open once the disk healed")


async def workload(db: str, fault: FaultVFS, *, crash: bool, totals: Counter[str]) -> dict[int, str]:
    """Run the messages; on the first failure of a persistent fault, send two more, then heal (or crash)."""
    outcomes: dict[int, str] = {}
    rt = await open_runtime(db, fault, totals)
    for i in range(MESSAGES):
        outcomes[i] = await call(rt, i)
        if fault.failing and outcomes[i] != "ok":
            for j in range(i + 1, min(i + 3, MESSAGES)):
                outcomes[j] = await call(rt, j)  # refused at once, or probing the journal
            if crash:
                await rt.abandon()
                return outcomes
            fault.heal()
            for j in range(len(outcomes), MESSAGES):
                outcomes[j] = await after_healing(rt, j)
            break
    fault.heal()
    await rt.__aexit__(None, None, None)
    return outcomes


async def sweep(
    fault: FaultVFS, tmp_path: Path, *, full: bool, persistent: bool, crash: bool, points: int
) -> Counter[str]:
    Recorder.trace_path = str(tmp_path / "count.trace")
    fault.arm(0, full=full)  # count only
    await workload(str(tmp_path / "count.db"), fault, crash=False, totals=Counter())
    available = fault.ops
    totals: Counter[str] = Counter()
    for at in range(1, available + 1, max(1, available // points)):
        db, trace = str(tmp_path / f"{at}.db"), str(tmp_path / f"{at}.trace")
        Recorder.trace_path = trace
        fault.arm(at, persistent=persistent, full=full)
        outcomes = await workload(db, fault, crash=crash, totals=totals)
        assert integrity(db) == "ok", f"operation {at}: the journal is corrupt"
        live = await recover(db, ACTORS)
        history = audit(db, trace)
        assert live == {a: history.events.get(a, []) for a in ACTORS}
        assert not history.duplicated(), f"operation {at}: processed twice: {history.duplicated()}"
        seen = {i for i, n in history.processed.items() if n}
        said = Counter(outcomes.values())
        ok = processed_if_acknowledged(outcomes)
        failed = definitely_failed(outcomes)
        assert ok <= seen, f"operation {at}: acknowledged and lost: {sorted(ok - seen)}"
        assert not failed & seen, f"operation {at}: reported failed, yet processed: {sorted(failed & seen)}"
        totals.update({"faults injected": fault.injected, "runs": 1, **{f"calls {k}": n for k, n in said.items()}})
        fault.injected = 0
    return totals


@pytest.mark.parametrize("full", [False, True], ids=["io-error", "disk-full"])
@pytest.mark.parametrize("mode", ["transient", "persistent", "persistent-crash"])
async def test_the_nth_io_operation_fails(fault: FaultVFS, tmp_path: Path, scale: int, full: bool, mode: str) -> None:
    totals = await sweep(
        fault,
        tmp_path,
        full=full,
        persistent=mode != "transient",
        crash=mode == "persistent-crash",
        points=(40 if mode == "transient" else 25) * scale,
    )
    add(f"I/O faults, {'disk full' if full else 'I/O error'}, {mode}", **totals)
    assert totals["faults injected"] >= totals["runs"] // 2, totals  # most runs did hit their fault
