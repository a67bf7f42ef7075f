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
            assert len(commits._generations) <= 2, generation
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
        assert first in commits._generations
        assert commits.at_risk()[0] == 22
        # An LTX file of the first generation that ends before the insert's frame leaves it at risk...
        commits.replicated(Ltx(1, 1, 0.0, 32, 2 * (24 + 4096), first))
        assert commits.at_risk()[0] == 21
        assert first in commits._generations
        # ...and one that holds it replicates it: no pending commit names that generation any more.
        commits.replicated(Ltx(2, 2, 0.0, 32, 3 * (24 + 4096), first))
        assert commits.at_risk()[0] == 20
        assert first not in commits._generations  # no pending commit names it any more
    finally:
        conn.close()
