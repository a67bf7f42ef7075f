from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A path for a fresh journal file."""
    return str(tmp_path / "journal.db")


def dump(path: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every Stele table, to compare a journal before and after."""
    # The stdlib driver, read-only: an independent look at the file.
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            for table in ("journal", "inbox", "snapshots", "actors", "meta")
        }
    finally:
        conn.close()


def files(path: str) -> list[str]:
    return sorted(p for p in os.listdir(os.path.dirname(path)))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pgserver.Server]:
    """A real PostgreSQL server for the session: a private cluster, or ``STELE_TEST_POSTGRES_URL``'s."""
    with pgserver.server() as server:
        yield server


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
