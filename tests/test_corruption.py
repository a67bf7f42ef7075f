"""Corruption: bytes flipped in copies of a journal give a clean error naming the
position (never a wrong state), and `check` finds and reports it."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from actors import SteleError
from runtime import Registry, Runtime
from runtime.interfaces._check import check
from storage import StorageError

from .conftest import outside
from .models import Account, Deposit, GetBalance

ROOT = Path(__file__).parent.parent


def flip_bit(data: bytes, rng: random.Random) -> bytes:
    """``data`` with one random bit flipped: often still valid msgpack (an amount of 5 read as 7)."""
    broken = bytearray(data)
    broken[rng.randrange(len(broken))] ^= 1 << rng.randrange(8)
    return bytes(broken)


async def journal_and_copy(db: str, tmp_path: Path) -> str:
    await journal(db)
    copy = str(tmp_path / "copy.db")
    shutil.copy(db, copy)
    return copy


async def journal(db: str) -> None:
    async with Runtime(db, actors=[Account]) as rt:
        for amount in range(1, 21):
            await rt.ask("Account/a", Deposit(amount))


@pytest.mark.parametrize("seed", range(8))
async def test_a_flipped_payload_byte_is_named_never_served(db: str, tmp_path: Path, seed: int) -> None:
    copy = await journal_and_copy(db, tmp_path)
    rng = random.Random(seed)
    conn = outside(str(copy))
    with conn:
        positions = [row[0] for row in conn.execute("SELECT position FROM journal WHERE kind = 'event'")]
        position = rng.choice(positions)
        data = conn.execute("SELECT data FROM journal WHERE position = ?", (position,)).get
        # Only the entry's checksum can tell, when the flipped payload still decodes.
        conn.execute("UPDATE journal SET data = ? WHERE position = ?", (flip_bit(data, rng), position))
        conn.execute("DELETE FROM snapshots")  # so rebuilding must read the broken event
    conn.close()
    report = check(copy, Registry([Account]))
    assert not report.ok and any(f"position {position}:" in p for p in report.problems)
    async with Runtime(copy, actors=[Account]) as rt:
        with pytest.raises(SteleError, match=f"position {position}"):
            await rt.ask("Account/a", GetBalance())  # an error, never a wrong balance


async def test_check_passes_a_healthy_journal_and_the_cli_reports_problems(db: str, tmp_path: Path) -> None:
    await journal(db)
    assert check(db, Registry([Account])).ok
    conn = outside(db)
    with conn:
        conn.execute("UPDATE journal SET data = x'c1' WHERE position = 3")
    conn.close()
    done = subprocess.run(
        [sys.executable, "-m", "runtime", "check", "--db", db, "--module", "tests.models"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1 and "position 3" in done.stdout


@pytest.mark.parametrize("seed", range(6))
def test_a_corrupted_file_fails_integrity_check(db: str, tmp_path: Path, seed: int) -> None:
    import anyio

    anyio.run(journal, db)
    copy = tmp_path / "torn.db"
    shutil.copy(db, copy)
    raw = bytearray(copy.read_bytes())
    rng = random.Random(seed)
    # Garble bytes in the pages past the header that hold rows: the free space of
    # an empty table's page is read by nothing, so a flip there corrupts nothing
    # (and which pages are empty changes with the schema, not with what is tested).
    conn = outside(str(copy))
    pages = [row[0] for row in conn.execute("SELECT pageno FROM dbstat WHERE ncell > 0 AND pageno > 1")]
    conn.close()
    for _ in range(64):
        page = rng.choice(pages)
        raw[rng.randrange((page - 1) * 4096, page * 4096)] ^= 0xFF
    copy.write_bytes(bytes(raw))
    try:
        report = check(str(copy))
    except StorageError as exc:  # a file too broken to open: a clean error naming the journal
        assert str(copy) in str(exc) or "journal" in str(exc)
    else:
        assert not report.ok


@pytest.mark.parametrize("seed", range(4))
async def test_a_flipped_snapshot_bit_falls_back_to_older_history(db: str, tmp_path: Path, seed: int) -> None:
    copy = await journal_and_copy(db, tmp_path)
    rng = random.Random(seed)
    conn = outside(str(copy))
    with conn:
        (seq, data) = conn.execute("SELECT seq, data FROM snapshots ORDER BY seq DESC LIMIT 1").get
        conn.execute("UPDATE snapshots SET data = ? WHERE seq = ?", (flip_bit(data, rng), seq))
    conn.close()
    report = check(copy, Registry([Account]))
    assert any(f"snapshot at seq {seq}" in p for p in report.problems), report.problems
    async with Runtime(copy, actors=[Account]) as rt:
        assert await rt.ask("Account/a", GetBalance()) == sum(range(1, 21))  # G5: older history, same state


@pytest.mark.parametrize("seed", range(60))
async def test_a_random_bit_flipped_anywhere_in_the_file_never_serves_a_wrong_state(
    db: str, tmp_path: Path, seed: int
) -> None:
    await journal(db)
    rng = random.Random(seed)
    copy = tmp_path / "copy.db"
    raw = bytearray(Path(db).read_bytes())
    raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
    copy.write_bytes(bytes(raw))
    report = check(str(copy), Registry([Account]))
    try:
        async with Runtime(str(copy), actors=[Account]) as rt:
            served = await rt.ask("Account/a", GetBalance())
    except (SteleError, StorageError):
        assert not report.ok, "the runtime refused a journal that check passed"
        return
    assert served == sum(range(1, 21)), f"a wrong state was served: {served} (check said {report.problems})"
