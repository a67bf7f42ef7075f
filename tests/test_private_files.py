"""Journals hold prompts and outputs: every file and directory Stele creates for
one is private to its owner (0600 / 0700), whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime import Runtime
from storage import restore

from .models import Account, Deposit
from .test_replication import remove_journal, replicated, until


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def modes(directory: Path) -> dict[str, str]:
    """Every path under ``directory`` (recursively) -> its permission bits, in octal."""
    found = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(root, name)
            found[os.path.relpath(path, directory)] = oct(stat.S_IMODE(os.lstat(path).st_mode))
    return found


def assert_private(directory: Path, names: list[str]) -> None:
    seen = modes(directory)
    for name in names:
        assert name in seen, f"{name} exists"
    # Every file is 0600; every directory at the top 0700. Litestream makes the
    # directories inside those with the journal directory's mode: unreachable anyway.
    wrong = {
        name: mode
        for name, mode in seen.items()
        if (mode != "0o600" and not os.path.isdir(directory / name))
        or (mode != "0o700" and os.path.isdir(directory / name) and os.sep not in name)
    }
    assert wrong == {}, f"not private: {wrong}"


async def test_every_file_of_a_replicated_journal_is_private(tmp_path: Path, umask_022: None) -> None:
    home = tmp_path / "home"
    home.mkdir()
    db = str(home / "journal.db")
    replica = home / "replica"
    async with Runtime(db, actors=[Account], replicate=str(replica)) as rt:
        await rt.tell("Account/a", Deposit(1))
        await until(lambda: replicated(rt), 15, "replicated")
        assert_private(
            home,
            [
                "journal.db",
                "journal.db-wal",
                "journal.db-shm",
                "journal.db-owner",
                "journal.db-litestream.yml",
                "journal.db-litestream.log",
                "journal.db-litestream.pid",
                ".journal.db-litestream",
                "replica",
            ],
        )
    # Restored journals are private too: by restore_if_missing, and by restore().
    remove_journal(db)
    async with Runtime(db, actors=[Account], replicate=str(replica), restore_if_missing=True) as rt:
        assert_private(home, ["journal.db", "journal.db-wal"])
    elsewhere = tmp_path / "restored"
    elsewhere.mkdir(mode=0o700)
    restore(str(replica), str(elsewhere / "copy.db"))
    assert_private(elsewhere, ["copy.db"])


async def test_a_journal_without_replication_is_private(db: str, umask_022: None) -> None:
    async with Runtime(db, actors=[Account]) as rt:
        await rt.tell("Account/a", Deposit(1))
        assert_private(Path(db).parent, ["journal.db", "journal.db-wal", "journal.db-shm", "journal.db-owner"])
