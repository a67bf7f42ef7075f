"""One journal file, one owner: ownership follows the file, whatever path reaches it.

A symlink and a hard link name the same file, so a runtime opened through
either is a second owner and is refused with the owner named. The lock on the
file itself is a Linux flock, independent of SQLite's POSIX locks: read-only
readers and the owner's own connections work beside it, and giving it up never
drops the POSIX locks of a connection still open in the process.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from actors import JournalOwnedError
from runtime import Runtime
from storage import Journal

from .conftest import dump
from .models import Account, Deposit, GetBalance


def _locks(path: str, kind: str) -> list[str]:
    """Lines of /proc/locks of type ``kind`` (FLOCK, POSIX) on the file at ``path``, held by this process."""
    st = os.stat(path)
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with open("/proc/locks") as f:
        return [
            line
            for line in f
            if (fields := line.split())[1] == kind and fields[4] == str(os.getpid()) and fields[5] == wanted
        ]


def _assert_names_me(error: JournalOwnedError) -> None:
    assert error.pid == os.getpid()
    assert error.since != "?" and error.host != "?"
    assert f"owned by pid {os.getpid()} on {error.host} since {error.since}" in str(error)


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
async def test_a_link_to_an_owned_journal_is_a_second_owner_and_is_refused(db: str, tmp_path: Path, link: str) -> None:
    async with Runtime(db, actors=[Account]) as rt:
        await rt.ask("Account/a", Deposit(5))
        other = str(tmp_path / "elsewhere" / "other.db")
        os.makedirs(os.path.dirname(other))
        if link == "symlink":
            os.symlink(db, other)
        else:
            os.link(db, other)
        with pytest.raises(JournalOwnedError) as info:
            async with Runtime(other, actors=[Account]):
                pass
        _assert_names_me(info.value)
        # The refused runtime changed nothing, and the owner carries on.
        assert await rt.ask("Account/a", Deposit(1)) == 6
    # Once the owner is gone, the file can be owned through the link.
    async with Runtime(other, actors=[Account]) as rt:
        assert await rt.ask("Account/a", GetBalance()) == 6


async def test_an_owner_through_a_link_refuses_the_journal_s_own_path(db: str, tmp_path: Path) -> None:
    async with Runtime(db, actors=[Account]) as rt:
        await rt.ask("Account/a", Deposit(1))
    other = str(tmp_path / "other.db")
    os.link(db, other)
    async with Runtime(other, actors=[Account]) as rt:
        with pytest.raises(JournalOwnedError) as info:
            async with Runtime(db, actors=[Account]):
                pass
        _assert_names_me(info.value)
        assert other in str(info.value)  # the path the owner went through
        assert await rt.ask("Account/a", GetBalance()) == 1


async def test_maintenance_ownership_follows_the_file_too(db: str, tmp_path: Path) -> None:
    async with Runtime(db, actors=[Account]) as rt:
        await rt.ask("Account/a", Deposit(1))
    other = str(tmp_path / "other.db")
    os.link(db, other)
    with Journal.open(other, readonly=False):
        with pytest.raises(JournalOwnedError) as info:
            async with Runtime(db, actors=[Account]):
                pass
        _assert_names_me(info.value)


async def test_an_owned_journal_stays_readable_and_its_owner_writes_on(db: str) -> None:
    async with Runtime(db, actors=[Account]) as rt:
        await rt.ask("Account/a", Deposit(1))
        assert _locks(db, "FLOCK"), "the journal file itself is locked"
        with Journal.open(db) as journal:  # read-only, through SQLite's POSIX locks, beside the flock
            assert journal.actor("Account/a") is not None
            before = len(list(journal.entries("Account/a")))
            for amount in (2, 3):
                await rt.ask("Account/a", Deposit(amount))
            # The reader sees the owner's new commits: nothing blocked either side.
            assert len(list(journal.entries("Account/a"))) > before
        assert await rt.ask("Account/a", GetBalance()) == 6
    assert not _locks(db, "FLOCK")
    assert [row[4] for row in dump(db)["journal"]].count("event") == 3


async def test_giving_up_ownership_keeps_sqlite_s_locks_of_a_reader_still_open(db: str) -> None:
    """Closing any descriptor of a file drops the process's POSIX locks on it: the
    descriptor that held the flock must not be closed under a live connection."""
    async with Runtime(db, actors=[Account]) as rt:
        await rt.ask("Account/a", Deposit(1))
    journal = Journal.open(db)
    try:
        async with Runtime(db, actors=[Account]) as rt:
            await rt.ask("Account/a", Deposit(1))
            assert journal.actor("Account/a") is not None
            held = _locks(db, "POSIX")
            assert held, "a WAL-mode connection holds a shared lock on the journal"
        # The runtime closed and let go of the file; the reader's lock is still there.
        assert _locks(db, "POSIX") and not _locks(db, "FLOCK")
        assert journal.actor("Account/a") is not None
    finally:
        journal.close()
