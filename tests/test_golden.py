"""Journals written by earlier versions must still open, decode, migrate and replay."""

from __future__ import annotations

import shutil
from pathlib import Path

import apsw

from examples.agents import Librarian, ResearchAgent
from runtime import Registry, Runtime, replay
from storage import SCHEMA_VERSION, Journal
from storage._schema import schema_version

from .models import Account, GetBalance

GOLDEN = Path(__file__).parent / "golden"


async def test_the_version_1_journal_replays_and_serves(tmp_path: Path) -> None:
    copy = tmp_path / "v1.db"
    shutil.copy(GOLDEN / "v1.db", copy)
    classes = [Account, ResearchAgent, Librarian]
    with Journal.open(str(copy)) as journal:
        report = replay(journal, Registry(classes))
        assert report.ok, report.divergences
        assert report.steps >= 8
    async with Runtime(str(copy), actors=classes) as rt:  # migrates to the current schema
        assert await rt.ask("Account/golden", GetBalance()) == 5 + 7 + 11 + 13 + 17 + 19
    with Journal.open(str(copy)) as journal:
        assert journal.meta("step_hwm") is not None
    conn = apsw.Connection(str(copy))
    assert schema_version(conn) == SCHEMA_VERSION
    conn.close()
