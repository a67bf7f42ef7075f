"""SQL over the journal: views in the user's words, strictly read-only, bounded in time and rows."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import msgspec
import pytest

import storage
from errors import QueryError, SteleError
from runtime import Runtime

from .conftest import dump
from .console_agents import ACTORS, HOSTILE, Research, populate
from .served import ROOT, cli


async def populated(db: str) -> None:
    # grace=0: the step waiting for its approval is left to recovery, not waited for.
    async with Runtime(db, actors=ACTORS, grace=0) as rt:
        await populate(rt)


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One journal for the module's tests, which only read it."""
    db = str(tmp_path_factory.mktemp("sql") / "journal.db")
    anyio.run(populated, db)
    return db


def test_the_views_speak_the_users_language(journal: str) -> None:
    result = storage.query(
        journal,
        "SELECT address, seq, kind, type, payload ->> '$.handler', payload ->> '$.body.question' "
        "FROM entries WHERE kind = 'message' ORDER BY position LIMIT 1",
    )
    assert result.rows == [["Agent/ada", 1, "message", "Research", "research", "Why is the sky blue?"]]
    effect = storage.query(journal, "SELECT payload FROM entries WHERE kind = 'effect' AND type = 'lookup' LIMIT 1")
    assert json.loads(effect.rows[0][0])["result"] == "found 20 things about Why is the sky blue?"
    times = storage.query(journal, "SELECT time, at FROM entries LIMIT 1").rows[0]
    assert times[0].endswith("Z") and times[0][:4].isdigit() and isinstance(times[1], float)
    actors = storage.query(journal, "SELECT address, key, status, last_seq, pending, timers FROM actors ORDER BY 1")
    by_address = {row[0]: tuple(row[1:]) for row in actors.rows}
    assert by_address["Agent/ada"][:2] == ("ada", "active")
    assert by_address["Agent/ada"][4] == 1  # the reminder
    assert by_address["Agent/bob"][3] == 1  # its approval step is open: its message is pending
    assert set(by_address) == {"Agent/ada", "Agent/bob", "Librarian/main", f"Agent/{HOSTILE}"}
    inbox = storage.query(journal, "SELECT address, kind, payload ->> '$.question' FROM inbox ORDER BY id")
    assert sorted(map(tuple, inbox.rows)) == [("Agent/ada", "timer", "check again"), ("Agent/bob", "message", None)]
    snapshot = storage.query(journal, "SELECT address, state ->> '$.questions[0]' FROM snapshots")
    assert ["Agent/ada", "Why is the sky blue?"] in snapshot.rows
    raw = storage.query(journal, "SELECT count(*) FROM main.journal")
    assert raw.rows[0][0] == storage.query(journal, "SELECT count(*) FROM entries").rows[0][0]


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM main.journal",
        "UPDATE main.actors SET status = 'suspended'",
        "INSERT INTO main.meta(key, value) VALUES ('x', 1)",
        "DROP TABLE main.inbox",
        "CREATE TABLE t(x)",
        "CREATE TEMP TABLE t(x)",
        "ATTACH DATABASE ':memory:' AS other",
        "PRAGMA query_only = 0",
        "PRAGMA journal_mode = DELETE",
        "VACUUM",
        "BEGIN IMMEDIATE",
        "SELECT load_extension('x')",
        "SELECT 1; DELETE FROM main.journal",
    ],
)
def test_nothing_a_query_says_changes_anything(journal: str, sql: str) -> None:
    before = dump(journal)
    with pytest.raises(QueryError) as caught:
        storage.query(journal, sql)
    assert caught.value.status == 400 and caught.value.code == "query"
    assert dump(journal) == before


def test_a_runaway_query_is_stopped_and_rows_are_bounded(journal: str) -> None:
    endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"
    with pytest.raises(QueryError, match=r"longer than 0\.2 s"):
        storage.query(journal, endless, timeout=0.2)
    many = storage.query(journal, "SELECT * FROM entries", max_rows=3)
    assert len(many.rows) == 3 and many.truncated
    assert not storage.query(journal, "SELECT * FROM entries LIMIT 2", max_rows=3).truncated
    with storage.Query.open(journal) as opened:  # the same connection answers again after a stop
        with pytest.raises(QueryError):
            opened.run(endless, timeout=0.1)
        assert opened.run("SELECT 41 + 1").rows == [[42]]


def test_bad_sql_and_old_or_foreign_files_get_clear_errors(journal: str, tmp_path: Path) -> None:
    with pytest.raises(QueryError, match="syntax error"):
        storage.query(journal, "SELEC 1")
    with pytest.raises(QueryError, match="empty"):
        storage.query(journal, "  ")
    with pytest.raises(SteleError, match="schema version 1"):
        storage.query(str(ROOT / "tests" / "golden" / "v1.db"), "SELECT 1")
    with pytest.raises(SteleError, match="no journal"):
        storage.query(str(tmp_path / "missing.db"), "SELECT 1")


def test_payloads_become_json_whatever_msgpack_holds() -> None:
    encode = msgspec.msgpack.encode
    assert json.loads(storage.payload_json(encode({"b": b"\x00\x01", "n": None})) or "") == {"b": "AAE=", "n": None}
    assert json.loads(storage.payload_json(encode({1: "one", 2.5: "x"})) or "") == {"1": "one", "2.5": "x"}
    assert json.loads(storage.payload_json(b"\x81\x92\x01\x02\xa1x") or "") == {"(1, 2)": "x"}  # {[1, 2]: "x"}
    assert storage.payload_json(b"\xc1") is None  # not msgpack
    assert storage.payload_json(None) is None


async def test_the_sql_command_prints_a_table_or_json_beside_a_running_owner(db: str) -> None:
    async with Runtime(db, actors=ACTORS, grace=0) as rt:
        await populate(rt)
        # While the runtime owns and writes the file: a subprocess, as a user runs it.
        out = cli("sql", "SELECT address, kind FROM entries WHERE address LIKE 'Agent/<%' LIMIT 2", "--db", db)
        assert "Agent/<script>" in out.stdout and "2 row(s)" in out.stderr
        listed = json.loads(cli("sql", "SELECT * FROM actors ORDER BY address", "--db", db, "--json").stdout)
        assert listed["columns"][:3] == ["address", "type", "key"] and len(listed["rows"]) == 4
        blob = json.loads(cli("sql", "SELECT data FROM main.journal LIMIT 1", "--db", db, "--json").stdout)
        assert isinstance(blob["rows"][0][0], str)  # bytes as base64
        refused = cli("sql", "DELETE FROM main.journal", "--db", db, check=False)
        assert refused.returncode == 2 and "only reading is allowed" in refused.stderr
        assert "must be at least 1" in cli("sql", "SELECT 1", "--db", db, "--max-rows", "0", check=False).stderr


async def test_control_characters_in_results_are_shown_escaped(db: str) -> None:
    async with Runtime(db, actors=ACTORS) as rt:
        await rt.ask("Agent/term", Research("\x1b[2Jcleared\x07"))
    out = cli("sql", "SELECT payload ->> '$.body.question' FROM entries WHERE kind = 'message'", "--db", db)
    assert "\\x1b[2Jcleared\\x07" in out.stdout and "\x1b[2J" not in out.stdout


async def test_a_replica_is_restored_first_and_queried(db: str, tmp_path: Path) -> None:
    replica = str(tmp_path / "replica")
    async with Runtime(db, actors=ACTORS, replicate=replica, durability="replicated") as rt:
        await rt.ask("Agent/ada", Research("replicated?"))
    out = cli("sql", "SELECT address, last_seq FROM actors ORDER BY address", "--db", replica, "--json")
    assert json.loads(out.stdout)["rows"] == [["Agent/ada", 6], ["Librarian/main", 3]]
    assert "restored" in cli("sql", "SELECT 1", "--db", replica).stderr
