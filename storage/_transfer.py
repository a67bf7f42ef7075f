"""Copying a journal between backends: a SQLite file into PostgreSQL and back, verified.

``copy_journal(source, target)`` reads every table of the source in one
snapshot (a read transaction; the source may be served meanwhile) and writes
it into a target that must be new: a file that does not exist yet (written
beside it and moved into place once verified), or a database without tables
(owned, with the owner lock, for the whole copy, so no runtime starts on it
half-filled). Rows keep their ids, positions and checksums. Afterwards both
sides are read again and compared table by table (row counts and a SHA-256 of
every row); any difference fails the copy. ``actor=ADDRESS`` copies one actor's
history (its registry row, entries, snapshots, pending messages, dead letters,
promises and idempotency keys) and all of the meta table.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import apsw
import msgspec
import psycopg

from ._errors import IntegrityError, OperationalError, SchemaError, StorageError
from ._owner import PRIVATE_FILE
from ._payload_store import resolve_rows
from ._payloads import BadReference
from ._pg_connect import connect as pg_connect
from ._pg_connect import is_postgres, redact
from ._pg_connect import translate as pg_translate
from ._pg_ops import meta_columns
from ._pg_rows import meta_value
from ._pg_schema import SCHEMA_VERSION as PG_SCHEMA_VERSION
from ._pg_schema import check_version
from ._pg_schema import migrate as pg_migrate
from ._pg_schema import schema_version as pg_schema_version
from ._pg_store import take_ownership
from ._restore import move_into_place, remove_with_side_files
from ._schema import SCHEMA_VERSION as SQLITE_SCHEMA_VERSION
from ._schema import migrate as sqlite_migrate
from ._schema import schema_version as sqlite_schema_version
from ._sqlite import close, connect, translate

COLUMNS: dict[str, tuple[str, ...]] = {
    "meta": ("key", "value"),
    "actors": ("id", "address", "type", "status", "reason", "updated", "floor"),
    "journal": ("position", "actor", "seq", "step", "kind", "type", "data", "at", "crc"),
    "inbox": (
        "id", "target", "handler", "type", "payload", "due", "idempotency_key", "attempts", "sender", "at",
        "timer_id", "reply_to", "reply_name",
    ),
    "snapshots": ("actor", "seq", "type", "data", "at", "crc"),
    "idempotency": ("key", "address", "step", "reply", "at", "kind", "handler"),
    "promises": ("address", "name", "value", "at"),
    "dead_letters": ("id", "target", "handler", "type", "payload", "sender", "attempts", "reason", "at"),
}  # fmt: skip
"""Every table a copy carries, in the order it fills them, with its columns (as SQLite names them)."""

ORDER: dict[str, str] = {
    "meta": "key",
    "actors": "id",
    "journal": "position",
    "inbox": "id",
    "snapshots": "actor, seq",
    "idempotency": "key",
    "promises": "address, name",
    "dead_letters": "id",
}

VALUES = {
    "journal": "data",
    "inbox": "payload",
    "snapshots": "data",
    "idempotency": "reply",
    "promises": "value",
    "dead_letters": "payload",
}
"""The column of each table that may hold a reference to a payload stored once (SQLite)."""

Row = tuple[Any, ...]


@dataclass
class CopyReport:
    """What a copy wrote, and that it was verified."""

    source: str
    target: str
    rows: dict[str, int] = field(default_factory=dict)
    digest: str = ""
    """SHA-256 of every row copied, the same read back from both sides."""
    seconds: float = 0.0


def copy_journal(source: str, target: str, *, actor: str | None = None) -> CopyReport:
    """Copy the journal at ``source`` into the new journal ``target`` (paths or ``postgresql://`` URLs)."""
    started = time.perf_counter()
    report = CopyReport(redact(source), redact(target))
    with _reading(source) as read:
        if actor is not None and read("actors", _where("actors", actor)) == []:
            raise OperationalError(f"{redact(source)} has no actor {actor!r}")
        tables = {name: read(name, _where(name, actor)) for name in COLUMNS}
    if is_postgres(target):
        _write_postgres(target, tables)
        _verify(target, tables, redact(target))
    else:
        path = os.path.abspath(target)
        if os.path.lexists(path):
            raise OperationalError(f"{path} exists: a copy never overwrites a journal; choose a new path")
        temp = f"{path}.copying-{uuid.uuid4().hex[:8]}"
        try:
            _write_sqlite(temp, tables)
            _verify(temp, tables, path)
            move_into_place(temp, path)  # only once verified
        finally:
            remove_with_side_files(temp)
    expected = _digest(tables)
    report.rows = {name: len(rows) for name, rows in tables.items()}
    report.digest = expected
    report.seconds = time.perf_counter() - started
    return report


def _where(table: str, actor: str | None) -> tuple[str, tuple[Any, ...]] | None:
    """The filter that keeps one actor's rows of ``table`` (None: every row)."""
    if actor is None or table == "meta":
        return None
    by_id = "(SELECT id FROM actors WHERE address = ?)"
    return {
        "actors": ("address = ?", (actor,)),
        "journal": (f"actor = {by_id}", (actor,)),
        "snapshots": (f"actor = {by_id}", (actor,)),
        "inbox": ("target = ? OR reply_to = ?", (actor, actor)),
        "dead_letters": ("target = ?", (actor,)),
        "promises": ("address = ?", (actor,)),
        "idempotency": ("address = ?", (actor,)),
    }[table]


def _digest(tables: dict[str, list[Row]]) -> str:
    h = hashlib.sha256()
    encode = msgspec.msgpack.Encoder().encode
    for name in COLUMNS:
        for row in tables.get(name, ()):
            h.update(encode(row))
    return h.hexdigest()


# -- reading, in one snapshot -------------------------------------------------------------------

Read = Callable[[str, tuple[str, tuple[Any, ...]] | None], list[Row]]


@contextlib.contextmanager
def _reading(location: str) -> Iterator[Read]:
    if is_postgres(location):
        with _reading_postgres(location) as read:
            yield read
    else:
        with _reading_sqlite(location) as read:
            yield read


@contextlib.contextmanager
def _reading_sqlite(path: str) -> Iterator[Read]:
    path = os.path.abspath(path)
    if not os.path.exists(path):
        raise OperationalError(f"no journal at {path}")
    conn = connect(path, readonly=True)
    try:
        version = sqlite_schema_version(conn)
        if version != SQLITE_SCHEMA_VERSION:
            raise SchemaError(
                f"{path} has schema version {version}; a copy reads version {SQLITE_SCHEMA_VERSION} only "
                "(serve it once with this Stele to migrate it)"
                if version
                else f"{path} is not a Stele journal (no schema version)"
            )
        conn.execute("BEGIN")  # one snapshot for every table

        def read(table: str, where: tuple[str, tuple[Any, ...]] | None) -> list[Row]:
            sql = f"SELECT {', '.join(COLUMNS[table])} FROM {table}"
            params: tuple[Any, ...] = ()
            if where is not None:
                sql += f" WHERE {where[0]}"
                params = where[1]
            try:
                rows = [tuple(row) for row in conn.execute(f"{sql} ORDER BY {ORDER[table]}", params)]
                if table in VALUES:  # a payload stored once is copied as its value (the target stores it anew)
                    rows = resolve_rows(conn, rows, (COLUMNS[table].index(VALUES[table]),))
            except apsw.Error as exc:
                raise translate(exc, f"cannot read {path}") from None
            except BadReference as exc:
                raise IntegrityError(
                    f"cannot copy {path}: a stored payload cannot be read: {exc} (`python -m runtime check` names it)"
                ) from None
            return rows

        yield read
        conn.execute("COMMIT")
    finally:
        close(conn)


@contextlib.contextmanager
def _reading_postgres(url: str) -> Iterator[Read]:
    where_ = redact(url)
    conn = pg_connect(url, readonly=True)
    try:
        try:
            version = pg_schema_version(conn, where_)
            if version == 0:
                raise SchemaError(f"{where_} is not a Stele journal (no Stele tables)")
            check_version(version, where_)
            if version < PG_SCHEMA_VERSION:
                raise SchemaError(
                    f"{where_} has schema version {version}; a copy reads version {PG_SCHEMA_VERSION} only "
                    "(serve it once with this Stele to migrate it)"
                )
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")  # one snapshot for every table
        except psycopg.Error as exc:
            raise pg_translate(exc, f"cannot read {where_}") from None

        def read(table: str, where: tuple[str, tuple[Any, ...]] | None) -> list[Row]:
            columns = ["text_value", "int_value", "real_value"] if table == "meta" else list(COLUMNS[table])
            sql = f"SELECT {'key, ' if table == 'meta' else ''}{', '.join(columns)} FROM {table}"
            params: tuple[Any, ...] = ()
            if where is not None:
                sql += f" WHERE {where[0].replace('?', '%s')}"
                params = where[1]
            order = ORDER[table].replace("key", 'key COLLATE "C"').replace("address", 'address COLLATE "C"')
            order = order.replace("name", 'name COLLATE "C"')
            try:
                rows = conn.execute(f"{sql} ORDER BY {order}", params).fetchall()
            except psycopg.Error as exc:
                raise pg_translate(exc, f"cannot read {where_}") from None
            if table == "meta":
                return [(row[0], meta_value(row[1:])) for row in rows]
            return [tuple(row) for row in rows]

        yield read
        conn.execute("COMMIT")
    finally:
        conn.close()


# -- writing into a new journal ----------------------------------------------------------------


def _verify(location: str, tables: dict[str, list[Row]], shown: str) -> None:
    """Read the copy back and compare it with what was read from the source, table by table."""
    with _reading(location) as read:
        written = {name: read(name, None) for name in COLUMNS}
    for name in COLUMNS:
        if len(written[name]) != len(tables[name]) or _digest({name: written[name]}) != _digest({name: tables[name]}):
            raise StorageError(
                f"the copy into {shown} does not match its source in table {name}: "
                f"{len(tables[name])} row(s) read, {len(written[name])} found; the target is not to be used"
            )


def _write_sqlite(temp: str, tables: dict[str, list[Row]]) -> None:
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    os.close(fd)
    conn = connect(temp)
    try:
        try:
            sqlite_migrate(conn, temp)
            with conn:
                conn.execute("DELETE FROM meta")  # the copy brings its own (step_hwm included)
                for name, columns in COLUMNS.items():
                    rows = tables[name]
                    if rows:
                        marks = ", ".join("?" * len(columns))
                        conn.executemany(f"INSERT INTO {name}({', '.join(columns)}) VALUES ({marks})", rows)
        except apsw.Error as exc:
            raise translate(exc, f"cannot write {temp}") from None
    finally:
        close(conn)


def _write_postgres(url: str, tables: dict[str, list[Row]]) -> None:
    where = redact(url)
    conn = pg_connect(url)
    try:
        try:
            if pg_schema_version(conn, where) != 0:
                raise OperationalError(
                    f"{where} already holds a Stele journal: a copy goes into an empty database only"
                )
            take_ownership(conn, where)  # no runtime starts on it while it is half-filled
            pg_migrate(conn, where, time.time())
            with conn.transaction():
                conn.execute("DELETE FROM meta")  # the copy brings its own (step_hwm included)
                for name, names in COLUMNS.items():
                    rows = tables[name]
                    if not rows:
                        continue
                    columns = names
                    if name == "meta":
                        rows = [(key, *meta_columns(value)) for key, value in rows]
                        columns = ("key", "text_value", "int_value", "real_value")
                    with conn.cursor().copy(f"COPY {name}({', '.join(columns)}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
                conn.execute(
                    "SELECT setval(pg_get_serial_sequence('journal', 'position'), "
                    "coalesce((SELECT max(position) FROM journal), 0) + 1, false)"
                )
        except psycopg.Error as exc:
            raise pg_translate(exc, f"cannot write {where}") from None
    finally:
        conn.close()  # the owner lock goes with the session
