"""What only a PostgreSQL journal has: bad servers, credentials and databases refused clearly with
nothing written, ownership through the server, a lost reply read back, the isolated path in
chunks, and moving journals between a file and a database (the guarantees themselves run on both
backends in their own modules)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import anyio
import psycopg
import pytest

from errors import JournalOperationalError, JournalOwnedError, JournalSchemaError, UnconsumedError
from runtime import Runtime
from storage import InboxRow, Journal, Outcome, PgStore, PutMeta, Unit
from storage._pg_connect import connect as readonly_connect
from storage._pg_store import Pool

from . import pgserver
from .conftest import dump, query, tamper
from .models import Account, Deposit, GetBalance
from .pgproxy import Proxy
from .pgserver import Server, free_port, with_database
from .served import Server as Served
from .served import cli, request

AT = 1_800_000_000.0


def tables(url: str) -> list[str]:
    """The tables of the database's current schema, from outside."""
    return [
        str(row[0])
        for row in query(url, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1")
    ]


async def refused(url: str, match: str) -> JournalOperationalError:
    with pytest.raises(JournalOperationalError, match=match) as info:
        async with Runtime(url, actors=[Account]):
            pass
    with pytest.raises(JournalOperationalError, match=match):
        Journal.open(url)
    return info.value


# -- bad input: refused clearly, nothing written ----------------------------------------------------


async def test_an_unreachable_server_is_named() -> None:
    url = f"postgresql://stele@127.0.0.1:{free_port()}/agents"  # nothing listens there
    error = await refused(url, "cannot reach PostgreSQL at postgresql://stele@127.0.0.1")
    assert "Connection refused" in str(error) or "connection" in str(error)
    done = cli("actors", "--db", url, check=False)
    assert done.returncode == 2 and "cannot reach PostgreSQL" in done.stderr


async def test_wrong_credentials_are_named_and_the_password_never_shown(pg_url: str) -> None:
    parts = urlsplit(pg_url)
    wrong = urlunsplit(parts._replace(netloc=f"{parts.username}:not-the-password@{parts.hostname}:{parts.port}"))
    error = await refused(wrong, "refused the credentials")
    assert "not-the-password" not in str(error) and "***" in str(error)
    assert tables(pg_url) == []


async def test_a_missing_database_is_named(pg_server: Server) -> None:
    missing = with_database(pg_server.admin_url, "no_such_database")
    await refused(missing, "the database does not exist")


async def test_another_application_s_tables_are_refused_and_left_alone(pg_url: str, tmp_path: Path) -> None:
    tamper(pg_url, "CREATE TABLE users(id integer PRIMARY KEY, name text)")
    tamper(pg_url, "INSERT INTO users VALUES (1, 'ada')")
    with pytest.raises(JournalSchemaError, match=r"another application's tables \(users\)"):
        async with Runtime(pg_url, actors=[Account]):
            pass
    with pytest.raises(JournalSchemaError, match="another application's tables"):
        Journal.open(pg_url)
    assert tables(pg_url) == ["users"] and query(pg_url, "SELECT * FROM users") == [(1, "ada")]
    done = cli(
        "migrate", "--from", pg_url, "--to", str(Path(pg_url.rpartition("/")[2]).with_suffix(".db")), check=False
    )
    assert done.returncode == 2 and "another application's tables" in done.stderr


async def test_a_newer_stele_schema_is_refused_and_left_alone(pg_url: str) -> None:
    async with Runtime(pg_url, actors=[Account]) as rt:
        await rt.ask("Account/a", Deposit(5))
    tamper(pg_url, "UPDATE stele_schema SET version = 99")
    before = dump(pg_url)
    with pytest.raises(JournalSchemaError, match="Stele schema version 99 is newer than this Stele understands"):
        async with Runtime(pg_url, actors=[Account]):
            pass
    with pytest.raises(JournalSchemaError, match="newer"):
        Journal.open(pg_url)
    assert dump(pg_url) == before


async def test_replication_options_and_replicated_durability_without_standbys_are_refused(pg_url: str) -> None:
    with pytest.raises(ValueError, match=r"replicate.*for SQLite journals"):
        Runtime(pg_url, actors=[Account], replicate="/tmp/replica")
    with pytest.raises(ValueError, match="vfs"):
        Runtime(pg_url, actors=[Account], vfs="fault")
    with pytest.raises(JournalOperationalError, match="no synchronous standbys"):
        async with Runtime(pg_url, actors=[Account], durability="replicated"):
            pass
    assert tables(pg_url) == []  # refused before anything was written
    async with Runtime(pg_url, actors=[Account]) as rt:
        with pytest.raises(ValueError, match='open the runtime with durability="replicated"'):
            await rt.tell("Account/a", Deposit(1), durability="replicated")


async def test_replicated_durability_waits_for_a_synchronous_standby() -> None:
    # A primary and a streaming standby of its own (the session's server is left alone).
    with pgserver.cluster() as primary:
        standby = primary.standby("stele_standby")
        try:
            tamper(primary.password_url, "ALTER SYSTEM SET synchronous_standby_names = 'stele_standby'")
            tamper(primary.password_url, "SELECT pg_reload_conf()")
            for _ in range(600):  # bounded: 60 s for the standby to connect and be synchronous
                rows = query(primary.password_url, "SELECT sync_state FROM pg_stat_replication")
                if rows == [("sync",)]:
                    break
                time.sleep(0.1)
            assert rows == [("sync",)]
            url = primary.password_url
            async with Runtime(url, actors=[Account], durability="replicated") as rt:
                store = rt.store
                assert isinstance(store, PgStore) and store.synchronous_commit == "on"
                assert await rt.ask("Account/a", Deposit(5), durability="replicated") == 5
                standby.stop()  # no standby: no commit can be acknowledged now
                with anyio.move_on_after(3) as waited:
                    await rt.ask("Account/a", Deposit(1))
                assert waited.cancelled_caught  # the commit waits for a standby to have it
                standby.start()
                with anyio.fail_after(60):
                    assert await rt.ask("Account/a", GetBalance()) == 6  # acknowledged once it is back
            standby_url = f"postgresql://{pgserver.SUPERUSER}@127.0.0.1:{standby.port}/postgres"
            with anyio.fail_after(60):
                while True:  # the standby applies what it acknowledged (bounded)
                    try:
                        events = "SELECT count(*) FROM journal WHERE kind = 'event'"
                        if query(pgserver.with_password(standby_url), events) == [(2,)]:
                            break
                    except psycopg.Error:
                        pass
                    await anyio.sleep(0.1)
        finally:
            standby.stop("immediate")
            shutil.rmtree(standby.base, ignore_errors=True)


# -- ownership ----------------------------------------------------------------------------------


async def test_a_second_owner_is_refused_naming_the_first_and_readers_cannot_write(pg_url: str) -> None:
    async with Runtime(pg_url, actors=[Account]) as rt:
        await rt.ask("Account/a", Deposit(6))
        with pytest.raises(JournalOwnedError) as info:
            async with Runtime(pg_url, actors=[Account]):
                pass
        assert info.value.pid == os.getpid() and f"owned by pid {os.getpid()}" in str(info.value)
        with Journal.open(pg_url) as journal:
            assert journal.actor("Account/a") is not None
        with readonly_connect(pg_url, readonly=True) as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("DELETE FROM journal")  # a session opened as Journal opens its own cannot write
        assert await rt.ask("Account/a", GetBalance()) == 6


async def test_a_dead_owner_is_taken_over(pg_url: str) -> None:
    child = textwrap.dedent(
        f"""
        import anyio, sys
        sys.path.insert(0, {os.getcwd()!r})
        from runtime import Runtime
        from tests.models import Account, Deposit
        async def main():
            async with Runtime({pg_url!r}, actors=[Account]) as rt:
                await rt.ask("Account/a", Deposit(6))
                print("owned", flush=True)
                await anyio.sleep(60)
        anyio.run(main)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "owned"
        with pytest.raises(JournalOwnedError, match=f"pid {proc.pid}"):
            async with Runtime(pg_url, actors=[Account]):
                pass
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    async with Runtime(pg_url, actors=[Account]) as rt:  # its session ended with it: the lock with it
        assert await rt.ask("Account/a", GetBalance()) == 6


# -- the writer against the real server ------------------------------------------------------------


def inbox(ident: int) -> InboxRow:
    return InboxRow(ident, "A/a", "h", "M", b"\x80", None, None, 0, None, AT, None, None, None)


def committing(store: PgStore) -> Callable[[list[Unit]], list[Outcome]]:
    results: dict[str, list[Outcome]] = {}
    ready = threading.Event()

    def done(outcomes: list[Outcome]) -> None:
        results["outcomes"] = outcomes
        ready.set()

    def commit(units: list[Unit]) -> list[Outcome]:
        ready.clear()
        store.submit(units, done)
        assert ready.wait(60)
        return results["outcomes"]

    return commit


def deliver(results: list[tuple[Callable[[list[Outcome]], None], list[Outcome]]]) -> None:
    for done, outcomes in results:
        done(outcomes)


def test_a_commit_whose_reply_is_lost_is_read_back_and_kept_once(pg_url: str) -> None:
    proxy = Proxy(pg_url)
    store = PgStore.open(proxy.url, notify=deliver)
    try:
        commit = committing(store)
        assert commit([Unit(inbox=[inbox(1)], top=1)]) == [None]
        proxy.lose_next_reply()  # the server commits; the writer never hears of it
        assert commit([Unit(inbox=[inbox(2)], ops=[PutMeta("lost", "reply")], top=2)]) == [None]
        assert proxy.replies_lost == 1
        assert [p.id for p in store.pending()] == [1, 2] and store.meta("lost") == "reply"
        assert store.failing is None
    finally:
        store.close()
        proxy.stop()


def test_one_bad_unit_among_many_fails_alone_across_transactions_of_64(pg_url: str) -> None:
    store = PgStore.open(pg_url, notify=deliver)
    try:
        commit = committing(store)
        units = [Unit(inbox=[inbox(i)], top=i) for i in range(1, 151)]
        units[3] = Unit(consumed=[9999], top=4)  # never pending: its step would run twice
        units[100] = Unit(ops=[PutMeta("big", 2**63)], top=101)  # beyond 64 bits
        outcomes = commit(units)
        assert isinstance(outcomes[3], UnconsumedError)
        assert outcomes[100] is not None and "cannot be stored" in str(outcomes[100])
        assert [i for i, outcome in enumerate(outcomes) if outcome is not None] == [3, 100]
        assert len(store.pending()) == 148
    finally:
        store.close()
    reopened = PgStore.open(pg_url, notify=deliver)
    try:
        assert reopened.step_hwm == 150  # the high-water mark of what committed
    finally:
        reopened.close()


class Reads:
    """Reads through ``pool``, each in a thread of its own, each outcome (a row or the error) kept by name.

    :meth:`hold` is a read that keeps its connection until ``release`` is set.
    """

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.holding, self.release = threading.Event(), threading.Event()
        self.results: dict[str, object] = {}

    def hold(self, conn: psycopg.Connection[object]) -> object:
        self.holding.set()
        assert self.release.wait(60)
        return conn.execute("SELECT 1").fetchone()

    def start(self, name: str, query: Callable[[psycopg.Connection[object]], object]) -> threading.Thread:
        def read() -> None:
            try:
                self.results[name] = self.pool.run(query)
            except Exception as exc:
                self.results[name] = exc

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        return thread


def test_a_reader_waiting_for_a_connection_is_not_stranded_when_the_sessions_end(
    pg_server: Server, pg_url: str
) -> None:
    # One connection, in use; a second reader waits for it. The database then ends every
    # session and refuses new ones: the first reader fails, and its connection is dropped,
    # not given back. The waiter must be woken to make its own (and fail or succeed clearly),
    # not wait for a connection nobody will return.
    pool = Pool(pg_url, 1, "the test database")
    reads = Reads(pool)
    first = reads.start("first", reads.hold)
    try:
        assert reads.holding.wait(60)
        second = reads.start("second", lambda c: c.execute("SELECT 2").fetchone())
        for _ in range(600):  # bounded: the second reader is waiting for the one connection
            if pool.waiting == 1:
                break
            time.sleep(0.01)
        assert pool.waiting == 1
        with pg_server.closed(pg_url):
            reads.release.set()
            first.join(60)
            assert isinstance(reads.results["first"], JournalOperationalError)
            second.join(60)  # a bound, not a timing: the old pool waited here for ever
            assert not second.is_alive()
        assert reads.results["second"] == (2,) or isinstance(reads.results["second"], JournalOperationalError)
        assert pool.run(lambda c: c.execute("SELECT 3").fetchone()) == (3,)  # and reads go on
    finally:
        reads.release.set()
        pool.close()


def test_closing_the_readers_leaves_a_read_in_flight_to_finish(pg_url: str) -> None:
    # A runtime abandoned (or closed) while one of its worker threads still reads: closing the pool
    # closed that thread's connection under its query, and libpq, freed under a running call, once
    # aborted a whole test run. A connection in use is closed when it is given back.
    pool = Pool(pg_url, 2, "the test database")
    reads = Reads(pool)
    reader = reads.start("read", reads.hold)
    try:
        assert reads.holding.wait(60)
        pool.close()
        reads.release.set()
        reader.join(60)
        assert not reader.is_alive()
        assert reads.results["read"] == (1,)  # it finished on its own connection
        with pytest.raises(JournalOperationalError, match="closed"):
            pool.run(lambda c: c.execute("SELECT 2").fetchone())
    finally:
        reads.release.set()
        pool.close()


# -- moving between the two, and inspecting a database ---------------------------------------------


async def seeded(path: str) -> None:
    async with Runtime(path, actors=[Account]) as rt:
        for i in range(12):
            await rt.ask(f"Account/{'ab'[i % 2]}", Deposit(i + 1))
        await rt.tell("Account/c", Deposit(50), idempotency_key="k-1")


async def balances(location: str) -> list[int]:
    async with Runtime(location, actors=[Account]) as rt:
        return [await rt.ask(f"Account/{k}", GetBalance()) for k in "abc"]


async def test_migrate_copies_a_file_into_postgresql_and_the_runtime_carries_on(db_file: str, pg_url: str) -> None:
    await seeded(db_file)
    before = dump(db_file)
    done = cli("migrate", "--from", db_file, "--to", pg_url, "--json")
    report = json.loads(done.stdout)
    assert report["rows"]["journal"] == len(before["journal"]) and len(report["digest"]) == 64
    assert dump(db_file) == before  # the source is only read
    with Journal.open(db_file) as src, Journal.open(pg_url) as dst:
        assert src.actors() == dst.actors() and src.pending() == dst.pending()
        for info in src.actors():
            assert list(src.entries(info.address)) == list(dst.entries(info.address))
            assert src.snapshot(info.address) == dst.snapshot(info.address)
        assert src.idempotent("k-1") == dst.idempotent("k-1") and src.meta("step_hwm") == dst.meta("step_hwm")
    assert await balances(pg_url) == await balances(db_file)
    async with Runtime(pg_url, actors=[Account]) as rt:
        assert await rt.ask("Account/a", Deposit(100)) == 136
        await rt.tell("Account/c", Deposit(50), idempotency_key="k-1")  # the key came along: not again
    assert await balances(pg_url) == [136, 42, 50]
    again = cli("migrate", "--from", db_file, "--to", pg_url, check=False)
    assert again.returncode == 2 and "already holds a Stele journal" in again.stderr


async def test_export_one_actor_to_a_file_that_inspection_and_replay_read(pg_url: str, tmp_path: Path) -> None:
    await seeded(pg_url)
    out = str(tmp_path / "b.db")
    cli("export", "--db", pg_url, "--actor", "Account/b", "--to", out)
    actors = json.loads(cli("actors", "--db", out, "--json").stdout)
    assert [a["address"] for a in actors] == ["Account/b"]
    assert "no divergence" in cli("replay", "tests.models", "--db", out).stdout
    state = json.loads(cli("state", "Account/b", "--db", out, "--module", "tests.models", "--json").stdout)
    assert state["state"]["balance"] == 2 + 4 + 6 + 8 + 10 + 12
    with Journal.open(pg_url) as src, Journal.open(out) as dst:
        assert list(src.entries("Account/b")) == list(dst.entries("Account/b"))
    assert await balances(out) == [0, 42, 0]
    again = cli("export", "--db", pg_url, "--to", out, check=False)
    assert again.returncode == 2 and "exists" in again.stderr
    whole = str(tmp_path / "all.db")
    cli("export", "--db", pg_url, "--to", whole)
    assert await balances(whole) == await balances(pg_url)
    unknown = cli("export", "--db", pg_url, "--actor", "Account/zz", "--to", str(tmp_path / "zz.db"), check=False)
    assert unknown.returncode == 2 and "no actor 'Account/zz'" in unknown.stderr
    assert not (tmp_path / "zz.db").exists()


def test_inspection_commands_read_a_served_database(pg_url: str) -> None:
    served = Served(pg_url)
    try:
        assert request(f"{served.url}/actors/Account/bob/deposit", {"amount": 3})[1] == 3
        request(f"{served.url}/actors/Account/bob/deposit", {"amount": 4})
        actors = json.loads(cli("actors", "--db", pg_url, "--json").stdout)
        assert [a["address"] for a in actors] == ["Account/bob"]
        entries = [
            json.loads(line) for line in cli("history", "Account/bob", "--db", pg_url, "--json").stdout.splitlines()
        ]
        assert [e["kind"] for e in entries][:3] == ["message", "event", "reply"]
        at = ("--at", str(entries[2]["position"]))
        then = json.loads(cli("state", "Account/bob", "--db", pg_url, *at, "--module", "tests.models", "--json").stdout)
        assert then["state"]["balance"] == 3
        status = json.loads(cli("status", "--db", pg_url, "--json").stdout)
        assert status["actors"] == 1 and status["journal_bytes"] > 0 and status["wal_bytes"] is None
        assert "stele-test" not in json.dumps(status)  # the password is never shown
        assert status["runtime"] is not None and status["runtime"]["active_actors"] >= 1
        checked = json.loads(cli("check", "--db", pg_url, "--module", "tests.models", "--json").stdout)
        assert checked["ok"] and checked["integrity"] == "ok" and checked["entries"] == 6
    finally:
        assert served.stop() == 0
    assert "no divergence" in cli("replay", "tests.models", "--db", pg_url).stdout


async def test_check_names_a_corrupt_row_in_the_database(pg_url: str) -> None:
    await seeded(pg_url)
    tamper(pg_url, "UPDATE journal SET data = ? WHERE position = 2", (b"\x81\xa6amount\x07",))
    done = cli("check", "--db", pg_url, check=False)
    assert done.returncode == 1 and "position 2" in done.stdout and "checksum" in done.stdout
