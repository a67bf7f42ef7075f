"""``python -m runtime sql "SELECT ..." --db FILE_OR_URL``: read-only SQL over a journal, in the user's words.

The views (``storage.VIEWS``) show addresses instead of integer ids, ISO times,
and every payload as JSON; the query runs on a read-only connection that an
authorizer keeps to reading, within a time limit. ``--db`` may also name a
replica (an ``s3://`` URL or a replica directory): it is restored into a
temporary file first, which is deleted afterwards.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from rich.table import Table
from rich.text import Text

import storage

from ._text import console, err, plain, write_json

MAX_CELL = 2000
"""The most characters of one value a table shows (``--json`` shows them all)."""


def is_replica(db: str) -> bool:
    """Whether ``--db`` names a replica to restore (a URL, or a replica directory) rather than a journal
    (a file, or a ``postgresql://`` database, queried where it is)."""
    return not storage.is_postgres(db) and ("://" in db or os.path.isdir(db))


@contextlib.contextmanager
def local_journal(db: str, *, quiet: bool = False) -> Iterator[str]:
    """The path of a journal file for ``db``: the file itself, or a temporary restore of a replica."""
    if not is_replica(db):
        yield db
        return
    folder = tempfile.mkdtemp(prefix="stele-restored-")
    try:
        url = db if "://" in db else os.path.abspath(db)
        report = storage.restore(url, os.path.join(folder, "journal.db"))
        if not quiet:
            err.print(
                plain(
                    f"restored {db} into a temporary copy: {report.actors} actor(s), "
                    f"last position {report.last_position}, integrity {report.integrity}"
                )
            )
        yield report.path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def jsonable(value: Any) -> Any:
    """A result value for ``--json``: bytes as base64 text."""
    if isinstance(value, bytes | memoryview):
        return base64.b64encode(bytes(value)).decode()
    return value


def shown(value: Any) -> Text:
    """A result value as a table cell: plain text, NULL and blobs told apart."""
    if value is None:
        return Text("NULL", style="dim")
    if isinstance(value, bytes | memoryview):
        data = bytes(value)
        return Text(f"x'{data[:64].hex()}{'…' if len(data) > 64 else ''}' ({len(data)} bytes)", style="dim")
    text = plain(value if isinstance(value, str) else repr(value))
    return Text(text if len(text) <= MAX_CELL else text[:MAX_CELL] + "…")


def cmd_sql(args: argparse.Namespace) -> int:
    """Run the query; print a table, or ``--json``."""
    with local_journal(args.db, quiet=args.json) as path:
        result = storage.query(path, args.query, max_rows=args.max_rows, timeout=args.timeout)
    if args.json:
        rows = [[jsonable(v) for v in row] for row in result.rows]
        write_json({"columns": result.columns, "rows": rows, "truncated": result.truncated})
        return 0
    table = Table(*[plain(c) for c in result.columns])
    for row in result.rows:
        table.add_row(*[shown(v) for v in row])
    console.print(table)
    more = f"; more rows not shown (--max-rows {args.max_rows})" if result.truncated else ""
    err.print(plain(f"{len(result.rows)} row(s) in {result.seconds * 1000:.1f} ms{more}"))
    return 0


def positive(value: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def seconds(value: str) -> float:
    """An argparse type: a positive number of seconds."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not 0 < number <= 3600:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 3600 s, not {value}")
    return number


def views_help() -> str:
    """The views, for ``--help``."""
    lines = ["views (the raw tables stay reachable as main.journal, main.actors, ...):"]
    for name, (what, _) in storage.VIEWS.items():
        lines.append(f"  {name:<13} {what}")
    return "\n".join(lines)
