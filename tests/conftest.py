from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .s3server import CREDENTIALS, S3Server


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
