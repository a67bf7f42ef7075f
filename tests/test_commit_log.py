"""The replication monitor's commit record stays bounded: the salts of WAL
generations no pending commit can name are forgotten, not kept forever."""

from __future__ import annotations

import apsw

from storage._commits import CommitLog
from storage._replica import Ltx


def test_old_wal_generations_are_forgotten_once_their_commits_are_replicated(db: str) -> None:
    conn = apsw.Connection(db)
    try:
        conn.execute("PRAGMA journal_mode = WAL").fetchall()
        conn.execute("PRAGMA wal_autocheckpoint = 0").fetchall()
        conn.execute("CREATE TABLE t(x)")
        commits = CommitLog(db + "-wal", 4096)
        conn.set_wal_hook(commits.hook)
        for generation in range(200):
            conn.execute("INSERT INTO t VALUES (?)", (generation,))
            conn.execute("INSERT INTO t VALUES (?)", (generation,))
            count, _ = commits.at_risk()
            assert count == 2
            commits.confirm(commits.count)  # replicated, as a sync answer says
            assert commits.at_risk() == (0, None)
            # Each checkpoint starts a new WAL generation (new salts) at the next commit.
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            assert len(commits.known_generations) <= 2, generation
    finally:
        conn.close()


def test_a_generation_is_kept_while_a_pending_commit_names_it(db: str) -> None:
    conn = apsw.Connection(db)
    try:
        conn.execute("PRAGMA journal_mode = WAL").fetchall()
        conn.execute("CREATE TABLE t(x)")
        commits = CommitLog(db + "-wal", 4096)
        commits.record_existing(0)  # as the store does: the WAL found at start counts as one commit
        conn.set_wal_hook(commits.hook)
        conn.execute("INSERT INTO t VALUES (1)")  # pending, in the first generation: its third frame
        with open(db + "-wal", "rb") as f:
            header = f.read(32)
        first = (int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big"))
        for i in range(20):
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            conn.execute("INSERT INTO t VALUES (?)", (i,))
        assert first in commits.known_generations
        assert commits.at_risk()[0] == 22
        # An LTX file of the first generation that ends before the insert's frame leaves it at risk...
        commits.replicated(Ltx(1, 1, 0.0, 32, 2 * (24 + 4096), first))
        assert commits.at_risk()[0] == 21
        assert first in commits.known_generations
        # ...and one that holds it replicates it: no pending commit names that generation any more.
        commits.replicated(Ltx(2, 2, 0.0, 32, 3 * (24 + 4096), first))
        assert commits.at_risk()[0] == 20
        assert first not in commits.known_generations  # no pending commit names it any more
    finally:
        conn.close()


def test_a_wal_restarted_by_litestream_after_the_last_commit_replicates_every_commit(db: str) -> None:
    """Litestream checkpoints once every frame is in its LTX files, then writes
    first into the new WAL: the newest LTX file then names salts no commit of
    ours was recorded in. Commits stayed "at risk" until the next commit."""
    conn = apsw.Connection(db)
    other = apsw.Connection(db)  # Litestream's connection
    try:
        conn.execute("PRAGMA journal_mode = WAL").fetchall()
        conn.execute("PRAGMA wal_autocheckpoint = 0").fetchall()
        conn.execute("CREATE TABLE t(x)")
        other.execute("CREATE TABLE seq(x)")
        commits = CommitLog(db + "-wal", 4096)
        commits.record_existing(0)
        conn.set_wal_hook(commits.hook)
        for i in range(5):
            conn.execute("INSERT INTO t VALUES (?)", (i,))
        assert commits.at_risk()[0] == 6
        with open(db + "-wal", "rb") as f:
            header = f.read(32)
        old = (int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big"))
        # An LTX of some other generation (before this process) moves nothing.
        commits.replicated(Ltx(1, 1, 0.0, 32, 4120, (old[0] - 5, 7)))
        assert commits.at_risk()[0] == 6
        other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        other.execute("INSERT INTO seq VALUES (1)")  # the restarted WAL's first frame is Litestream's
        with open(db + "-wal", "rb") as f:
            header = f.read(32)
        new = (int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big"))
        assert new != old and new not in commits.known_generations
        commits.replicated(Ltx(9, 9, 0.0, 32, 4120, new))
        assert commits.at_risk() == (0, None)
        assert commits.replicated_seq == commits.count
    finally:
        other.close()
        conn.close()


def test_a_wal_truncated_between_a_commit_and_its_hook_fails_nothing(db: str) -> None:
    """Another connection (the WAL bound's checkpoint, Litestream's) may truncate
    the WAL after a commit and before its hook reads the WAL header. The hook
    raised, and the writer reported a commit that had landed as failed."""
    conn = apsw.Connection(db)
    other = apsw.Connection(db)
    try:
        conn.execute("PRAGMA journal_mode = WAL").fetchall()
        conn.execute("PRAGMA wal_autocheckpoint = 0").fetchall()
        conn.execute("CREATE TABLE t(x)")
        commits = CommitLog(db + "-wal", 4096)
        commits.record_existing(0)
        truncate = [False]

        def hook(c: apsw.Connection, name: str, frames: int) -> int:
            if truncate[0]:
                other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()  # after the commit, before the record
            return commits.hook(c, name, frames)

        conn.set_wal_hook(hook)
        conn.execute("INSERT INTO t VALUES (1)")
        truncate[0] = True
        conn.execute("INSERT INTO t VALUES (2)")  # raised from the hook before
        truncate[0] = False
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (2,)
        assert commits.at_risk()[0] == 3
        # An LTX file of the generation the truncated commit was made in cannot confirm it...
        with open(db + "-wal", "rb") as f:
            assert f.read() == b""
        conn.execute("INSERT INTO t VALUES (3)")  # a new WAL: new salts
        with open(db + "-wal", "rb") as f:
            header = f.read(32)
        new = (int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big"))
        # ...one of the next WAL, written after the checkpoint, does.
        commits.replicated(Ltx(5, 5, 0.0, 32, 4120, new))
        assert commits.at_risk() == (0, None)
    finally:
        other.close()
        conn.close()
