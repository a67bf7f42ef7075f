from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest

from . import pgserver
from .report import REPORT
from .s3server import CREDENTIALS, S3Server

LONG_SCALE = 20
"""How many times more crash points, faults and kill cycles ``--long`` runs."""
LONG_FAULTS = 1_000
"""At least this many kill cycles and power-cut crash points per crash test with ``--long``."""
LONG_TIMEOUT_S = 3 * 3600
"""pytest-timeout's bound with ``--long``: a guard against a hang only. The crash
tests fail on a stall (no progress for a while), not on a total time that a
longer run is entitled to exceed."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        help=f"run the fault and soak tests {LONG_SCALE}x longer, and the slow ones (or set STELE_LONG=1)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--long"):
        os.environ["STELE_LONG"] = "1"  # for what is decided at import (Hypothesis settings)


def long_run(config: pytest.Config) -> bool:
    return bool(config.getoption("--long")) or os.environ.get("STELE_LONG", "") not in ("", "0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if long_run(config):
        for item in items:
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(LONG_TIMEOUT_S))
        return
    skip = pytest.mark.skip(reason="a long run: use --long or STELE_LONG=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not REPORT:
        return
    terminalreporter.section("fault injection")
    for section, counts in sorted(REPORT.items()):
        terminalreporter.write_line(f"{section}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))


@pytest.fixture(scope="session")
def scale(request: pytest.FixtureRequest) -> int:
    """1 in the fast tier, ``LONG_SCALE`` with ``--long``: multiplies fault counts."""
    return LONG_SCALE if long_run(request.config) else 1


BACKENDS = ("sqlite", "postgres")
"""What ``backend`` takes in the modules whose guarantees hold on every backend."""


@pytest.fixture
def backend() -> str:
    """The backend of the journal ``db`` makes: a SQLite file, unless a module overrides this fixture.

    The guarantee tests override it with ``params=BACKENDS`` (as anyio's
    ``anyio_backend`` is overridden), so each of their tests runs once on a
    file and once on a PostgreSQL database.
    """
    return "sqlite"


@pytest.fixture
def db(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """Where a fresh journal goes: a file's path, or a new PostgreSQL database's URL."""
    if backend == "sqlite":
        yield str(tmp_path / "journal.db")
        return
    assert backend == "postgres", backend
    server: pgserver.Server = request.getfixturevalue("pg_server")
    url = server.database()
    yield url
    server.drop(url)


@pytest.fixture
def db_file(tmp_path: Path) -> str:
    """A path for a fresh journal file, for what only a file has (its bytes, its WAL, its locks)."""
    return str(tmp_path / "journal.db")


TABLES = ("journal", "inbox", "snapshots", "actors", "meta")


def outside(path: str, *, readonly: bool = False) -> apsw.Connection:
    """A connection of its own to a journal file, as another program would open it.

    Through APSW, never the standard library's driver: that is a second SQLite
    library in this process, which knows nothing of APSW's open files, and
    closing its connection drops every POSIX lock the process holds on the
    file (APSW's included): a live runtime's WAL could then be checkpointed and
    truncated under its readers (a SIGBUS once ended a whole run).
    """
    flags = apsw.SQLITE_OPEN_READONLY if readonly else apsw.SQLITE_OPEN_READWRITE
    return apsw.Connection(path, flags=flags)


def dump(location: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every Stele table, to compare a journal before and after."""
    if location.startswith("postgresql://"):
        # psycopg on a connection of its own: an independent look at the database.
        import psycopg

        with psycopg.connect(location) as pg:
            return {
                table: [tuple(row) for row in pg.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()]
                for table in TABLES
            }
    # A read-only connection of its own: an independent look at the file.
    conn = outside(location, readonly=True)
    try:
        return {table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall() for table in TABLES}
    finally:
        conn.close()


def query(location: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of one statement (``?`` placeholders) read from outside, on either backend."""
    if location.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(location) as pg:
            return [tuple(row) for row in pg.execute(sql.replace("?", "%s"), params).fetchall()]
    conn = outside(location, readonly=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def tamper(location: str, sql: str, params: tuple[Any, ...] = ()) -> None:
    """Change a journal from outside (``?`` placeholders), as an operator or a bad disk would."""
    if location.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(location, autocommit=True) as pg:
            pg.execute(sql.replace("?", "%s"), params)
        return
    conn = outside(location)
    try:
        with conn:
            conn.execute(sql, params)
    finally:
        conn.close()


def files(path: str) -> list[str]:
    return sorted(p for p in os.listdir(os.path.dirname(path)))


@pytest.fixture(scope="session")
def pg_server() -> pgserver.Server:
    """A real PostgreSQL server for the session: a private cluster, or ``STELE_TEST_POSTGRES_URL``'s."""
    return pgserver.shared()


def pytest_sessionfinish(session: pytest.Session) -> None:
    pgserver.stop_shared()


@pytest.fixture
def pg_url(pg_server: pgserver.Server) -> Iterator[str]:
    """The URL of a fresh, empty database on the session's server (dropped afterwards)."""
    url = pg_server.database()
    yield url
    pg_server.drop(url)


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """A moto S3 server on 127.0.0.1 for the whole session."""
    for key, value in CREDENTIALS.items():
        os.environ.setdefault(key, value)
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def own_s3() -> Iterator[S3Server]:
    """A moto S3 server of this test's own, for tests that pause or stop it."""
    for key, value in CREDENTIALS.items():
        os.environ.setdefault(key, value)
    server = S3Server()
    yield server
    server.stop()
