"""SQL over a PostgreSQL journal: the same views as on a file, read-only, bounded in time and rows."""

from __future__ import annotations

import datetime
import json
import random
from collections.abc import Iterator
from pathlib import Path

import anyio
import apsw
import msgspec
import pytest

import storage
from errors import QueryError, SteleError
from runtime import Runtime
from storage._pg_views import TIME

from .conftest import dump, tamper
from .console_agents import ACTORS, HOSTILE, populate
from .pgserver import Server
from .served import cli


async def populated(url: str) -> None:
    async with Runtime(url, actors=ACTORS, grace=0) as rt:
        await populate(rt)


@pytest.fixture(scope="module")
def journal(pg_server: Server) -> Iterator[str]:
    """One database for the module's tests, which only read it."""
    url = pg_server.database()
    anyio.run(populated, url)
    yield url
    pg_server.drop(url)


def test_the_views_are_the_files_views_with_json_payloads(journal: str, tmp_path: Path) -> None:
    result = storage.query(
        journal,
        "SELECT address, seq, kind, type, payload ->> 'handler', payload -> 'body' ->> 'question' "
        "FROM entries WHERE kind = 'message' ORDER BY position LIMIT 1",
    )
    assert result.rows == [["Agent/ada", 1, "message", "Research", "research", "Why is the sky blue?"]]
    effect = storage.query(journal, "SELECT payload FROM entries WHERE kind = 'effect' AND type = 'lookup' LIMIT 1")
    assert json.loads(effect.rows[0][0])["result"] == "found 20 things about Why is the sky blue?"
    times = storage.query(journal, "SELECT time, at FROM entries LIMIT 1").rows[0]
    assert times[0].endswith("Z") and times[0][:4].isdigit() and isinstance(times[1], float)
    actors = storage.query(journal, "SELECT address, key, status, last_seq, pending, timers FROM actors ORDER BY 1")
    by_address = {row[0]: tuple(row[1:]) for row in actors.rows}
    assert by_address["Agent/ada"][:2] == ("ada", "active") and by_address["Agent/ada"][4] == 1
    assert by_address["Agent/bob"][3] == 1  # its approval step is open: its message is pending
    assert set(by_address) == {"Agent/ada", "Agent/bob", "Librarian/main", f"Agent/{HOSTILE}"}
    inbox = storage.query(journal, "SELECT address, kind, payload ->> 'question' FROM inbox ORDER BY id")
    assert sorted(map(tuple, inbox.rows)) == [("Agent/ada", "timer", "check again"), ("Agent/bob", "message", None)]
    snapshot = storage.query(journal, "SELECT address, state -> 'questions' ->> 0 FROM snapshots")
    assert ["Agent/ada", "Why is the sky blue?"] in snapshot.rows
    raw = storage.query(journal, "SELECT count(*) FROM public.journal")
    assert raw.rows[0][0] == storage.query(journal, "SELECT count(*) FROM entries").rows[0][0]
    # The same view, column for column, as a file of the same journal has it.
    copy = str(tmp_path / "copy.db")
    storage.copy_journal(journal, copy)
    for view in storage.VIEWS:
        here = storage.query(journal, f"SELECT * FROM {view} LIMIT 0").columns
        assert here == storage.query(copy, f"SELECT * FROM {view} LIMIT 0").columns, view
    same = "SELECT position, address, seq, kind, time, payload FROM entries ORDER BY position"
    mine, theirs = storage.query(journal, same).rows, storage.query(copy, same).rows
    assert [r[:5] for r in mine] == [r[:5] for r in theirs]
    assert [json.loads(r[5]) for r in mine] == [json.loads(r[5]) for r in theirs]


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM public.journal",
        "UPDATE public.actors SET status = 'suspended'",
        "INSERT INTO public.meta(key, int_value) VALUES ('x', 1)",
        "DROP TABLE public.inbox",
        "CREATE TABLE t(x int)",
        "CREATE TEMP TABLE t(x int)",
        "WITH gone AS (DELETE FROM public.journal RETURNING 1) SELECT count(*) FROM gone",
        "SELECT 1; DELETE FROM public.journal",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
        "SELECT pg_advisory_lock(1)",
        "SELECT set_config('default_transaction_read_only', 'off', false)",
        "SET default_transaction_read_only = off",
        "COPY public.journal TO STDOUT",
        "BEGIN",
        "COMMIT",
        "DO $$ BEGIN DELETE FROM public.journal; END $$",
        "SELECT nextval('public.journal_position_seq')",
    ],
)
def test_nothing_a_query_says_changes_anything(journal: str, sql: str) -> None:
    before = dump(journal)
    with pytest.raises(QueryError) as caught:
        storage.query(journal, sql)
    assert caught.value.status == 400 and caught.value.code == "query"
    assert dump(journal) == before


def test_a_runaway_query_is_stopped_rows_are_bounded_and_the_session_goes_on(journal: str) -> None:
    endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"
    with pytest.raises(QueryError, match=r"longer than 0\.2 s"):
        storage.query(journal, endless, timeout=0.2)
    many = storage.query(journal, "SELECT * FROM entries", max_rows=3)
    assert len(many.rows) == 3 and many.truncated
    assert not storage.query(journal, "SELECT * FROM entries LIMIT 2", max_rows=3).truncated
    with storage.PgQuery.open(journal) as opened:
        with pytest.raises(QueryError):
            opened.run(endless, timeout=0.1)
        with pytest.raises(QueryError, match="SQL error"):
            opened.run("SELECT nothing FROM nowhere")
        assert opened.run("SELECT 41 + 1").rows == [[42]]  # the same session answers after a stop and an error


def test_bad_sql_and_foreign_databases_get_clear_errors(journal: str, pg_url: str) -> None:
    with pytest.raises(QueryError, match="syntax error"):
        storage.query(journal, "SELECT FROM WHERE")
    with pytest.raises(QueryError, match="empty"):
        storage.query(journal, "  ")
    with pytest.raises(SteleError, match="not a Stele journal"):
        storage.query(pg_url, "SELECT 1")
    tamper(pg_url, "CREATE TABLE orders(id int)")
    with pytest.raises(SteleError, match="another application's tables"):
        storage.query(pg_url, "SELECT 1")


VALUES = [
    None,
    True,
    False,
    0,
    127,
    128,
    -1,
    -32,
    -33,
    255,
    65_535,
    2**32,
    2**63 - 1,
    2**64 - 1,
    -(2**63),
    0.1,
    -2.5,
    1e300,
    5e-324,
    2.2250738585072014e-308,
    "",
    "é✓𝄞",
    "x" * 40,
    "y" * 300,
    b"",
    b"\x00\x01\xff" * 50,
    [],
    [1, [2, [3, {"a": None}]]],
    list(range(20)),
    {"k": "v", "n": {"deep": [1.5, "two", b"3"]}},
    {str(i): i for i in range(20)},
    {1: "one", 2.5: "x"},
    datetime.datetime(2026, 11, 30, 8, 0, 1, 123456, tzinfo=datetime.UTC),
    datetime.datetime(1969, 7, 20, 20, 17, 40, tzinfo=datetime.UTC),
    datetime.datetime(2500, 1, 1, tzinfo=datetime.UTC),
]


def instant(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(json.loads(text).replace("Z", "+00:00"))


def test_payloads_become_the_same_json_on_the_server_as_in_python(journal: str) -> None:
    with storage.PgQuery.open(journal) as opened:
        for value in VALUES:
            data = msgspec.msgpack.encode(value)
            (row,) = opened.run(f"SELECT pg_temp.stele_json('\\x{data.hex()}'::bytea)").rows
            expected = storage.payload_json(data)
            got = row[0]
            if isinstance(value, datetime.datetime):  # the same instant (text may differ in its digits)
                assert got is not None and expected is not None
                assert instant(got) == instant(expected)
                continue
            assert expected is not None and got is not None, value
            mine, theirs = json.loads(got), json.loads(expected)
            if isinstance(value, float):  # jsonb writes a number's every digit (1e300 as 1000...0)
                mine = float(mine)
            assert mine == theirs, value
        for broken in (b"\xc1", b"\x92\x01", b"\x01\x02"):  # not msgpack, cut short, two values
            assert opened.run(f"SELECT pg_temp.stele_json('\\x{broken.hex()}'::bytea)").rows == [[None]]


async def test_the_sql_command_reads_a_database_beside_its_runtime(pg_url: str) -> None:
    async with Runtime(pg_url, actors=ACTORS, grace=0) as rt:
        await populate(rt, hostile=False)
        out = cli("sql", "SELECT address, kind FROM entries WHERE address = 'Agent/ada' LIMIT 2", "--db", pg_url)
        assert "Agent/ada" in out.stdout and "2 row(s)" in out.stderr
        assert "stele-test" not in out.stdout + out.stderr  # the password is never shown
        listed = json.loads(cli("sql", "SELECT * FROM actors ORDER BY address", "--db", pg_url, "--json").stdout)
        assert listed["columns"][:3] == ["address", "type", "key"] and len(listed["rows"]) == 3
        refused = cli("sql", "DELETE FROM public.journal", "--db", pg_url, check=False)
        assert refused.returncode == 2 and "only reading is allowed" in refused.stderr


def test_times_are_rounded_to_the_millisecond_as_on_a_file(journal: str) -> None:
    # Values at half a millisecond, where rounding decides, and many others: the same text as
    # SQLite's strftime gives a file's views (a view test once saw .079 on one side, .080 on the other).
    rng = random.Random(12)
    values = [1796029916.0795, 1796029916.0805, 1.0005, 0.0005, 1e9 + 0.9995, 1796029970.0794999]
    values += [rng.uniform(0, 4e9) for _ in range(500)]
    values += [round(rng.uniform(1.7e9, 1.9e9), 3) + 0.0005 for _ in range(500)]
    conn = apsw.Connection(":memory:")
    try:
        expected = [
            text
            for v in values
            for (text,) in conn.execute("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', ?, 'unixepoch')", (v,))
        ]
    finally:
        conn.close()
    listed = ", ".join(f"({v!r}::float8)" for v in values)
    time_of = TIME.format("v")
    with storage.PgQuery.open(journal) as opened:
        got = [row[0] for row in opened.run(f"SELECT {time_of} FROM (VALUES {listed}) AS t(v)", max_rows=2000).rows]
    assert got == expected
