"""SQL over a journal, in the user's words: read-only views over the tables.

Opened with ``sqlite3``, a journal shows integer actor ids and msgpack bytes.
:class:`Query` opens it read-only and adds TEMP views that speak the user's
language: addresses instead of ids, times as ISO 8601 text, every payload as
JSON (SQLite's JSON functions then reach inside it: ``payload ->> '$.body.amount'``).
The views take the tables' names (``actors``, ``inbox``, ``dead_letters``,
``snapshots``, ``promises``; the journal itself is ``entries``): a TEMP object
is found before a table of ``main``, and the raw tables stay reachable as
``main.journal``, ``main.actors``...

Nothing a query says can change anything: the connection is read-only, and an
authorizer allows reading and nothing else (no ATTACH, no writes to TEMP, no
PRAGMA but a few that describe the schema). A query runs at most ``timeout``
seconds and returns at most ``max_rows`` rows.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import apsw
import apsw.ext
import msgspec

from errors import QueryError

from ._errors import OperationalError, SchemaError
from ._payload_store import resolve
from ._payloads import BadReference, is_reference
from ._schema import SCHEMA_VERSION, schema_version
from ._sqlite import close, connect, translate

TIME = "strftime('%Y-%m-%dT%H:%M:%fZ', {}, 'unixepoch')"
"""An epoch REAL as ISO 8601 UTC text with milliseconds."""


def _time(column: str) -> str:
    return TIME.format(column)


VIEWS: dict[str, tuple[str, str]] = {
    "entries": (
        "the journal: one row per entry, with its actor's address and its payload as JSON",
        f"""SELECT j.position, a.address, a.type AS actor_type, j.seq, j.step, j.kind, j.type,
            {_time("j.at")} AS time, j.at, stele_json(j.data) AS payload
        FROM main.journal AS j JOIN main.actors AS a ON a.id = j.actor""",
    ),
    "actors": (
        "one row per actor: status, journal length, last activity, what waits in its inbox",
        f"""SELECT a.address, a.type, substr(a.address, length(a.type) + 2) AS key, a.status, a.reason,
            coalesce((SELECT max(seq) FROM main.journal WHERE actor = a.id), 0) AS last_seq,
            (SELECT {_time("at")} FROM main.journal WHERE actor = a.id ORDER BY seq DESC LIMIT 1) AS last_time,
            coalesce(p.messages, 0) AS pending, coalesce(p.timers, 0) AS timers,
            coalesce(d.letters, 0) AS dead_letters, {_time("a.updated")} AS registered
        FROM main.actors AS a
        LEFT JOIN (SELECT target, sum(timer_id IS NULL) AS messages, sum(timer_id IS NOT NULL) AS timers
                   FROM main.inbox GROUP BY target) AS p ON p.target = a.address
        LEFT JOIN (SELECT target, count(*) AS letters FROM main.dead_letters GROUP BY target) AS d
            ON d.target = a.address""",
    ),
    "inbox": (
        "messages accepted and not yet processed (kind: message, ask from an actor, or timer)",
        f"""SELECT i.id, i.target AS address, i.handler, i.type, stele_json(i.payload) AS payload,
            CASE WHEN i.timer_id IS NOT NULL THEN 'timer' WHEN i.reply_to IS NOT NULL THEN 'ask'
                 ELSE 'message' END AS kind,
            {_time("i.due")} AS due, i.idempotency_key, i.attempts, i.sender, i.timer_id, i.reply_to,
            {_time("i.at")} AS time
        FROM main.inbox AS i""",
    ),
    "dead_letters": (
        "messages taken out of their actors' way after failing too often, and why",
        f"""SELECT d.id, d.target AS address, d.handler, d.type, stele_json(d.payload) AS payload, d.sender,
            d.attempts, d.reason, {_time("d.at")} AS time
        FROM main.dead_letters AS d""",
    ),
    "snapshots": (
        "actors' states as snapshotted, as JSON",
        f"""SELECT a.address, s.seq, s.type, stele_json(s.data) AS state, {_time("s.at")} AS time
        FROM main.snapshots AS s JOIN main.actors AS a ON a.id = s.actor""",
    ),
    "promises": (
        "values resolved for promises and not yet taken by their handler",
        f"""SELECT p.address, p.name, stele_json(p.value) AS value, {_time("p.at")} AS time
        FROM main.promises AS p""",
    ),
}
"""Each view's name, what it shows, and its definition."""

_ALLOWED = frozenset({apsw.SQLITE_SELECT, apsw.SQLITE_READ, apsw.SQLITE_RECURSIVE})
_PRAGMAS = frozenset({"table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo"})
_FUNCTIONS_DENIED = frozenset({"load_extension", "fts3_tokenizer", "readfile", "writefile", "edit"})
STEPS_PER_CHECK = 1000
"""The VM steps between two looks at the clock (a query's time limit)."""


class QueryResult(msgspec.Struct, frozen=True):
    """What a query returned: its columns, its rows (up to the limit), and whether there were more."""

    columns: list[str]
    rows: list[list[Any]]
    """Values as SQLite has them: int, float, str, bytes or None."""
    truncated: bool
    """There were more rows than ``max_rows``."""
    seconds: float


def payload_json(data: bytes | None) -> str | None:
    """A msgpack payload as JSON text (``stele_json`` in SQL); None if it is not msgpack.

    Bytes become base64 strings (as msgspec writes them), map keys that are
    not strings become their text.
    """
    if data is None:
        return None
    try:
        value = msgspec.msgpack.decode(data)
    except (msgspec.DecodeError, TypeError, ValueError, RecursionError):
        return None
    try:
        return msgspec.json.encode(value, enc_hook=repr).decode()
    except (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError):
        # Keys msgspec cannot write (an array as a map key): their text instead.
        return json.dumps(_plain(value), default=repr, ensure_ascii=False)


def _resolving(conn: apsw.Connection) -> Callable[..., str | None]:
    """``stele_json`` over ``conn``: a payload stored once (docs/payloads.md) is read as its value.

    Its chunks are read on the query's own connection, so in the query's snapshot.
    """

    def stele_json(*args: Any) -> str | None:
        value = args[0]
        if not isinstance(value, bytes | memoryview):
            return None
        data = bytes(value)
        if is_reference(data):
            try:
                data = resolve(conn, data)
            except BadReference:
                return None  # unreadable, as a value that is not msgpack is (`check` names it)
        return payload_json(data)

    return stele_json


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return msgspec.json.decode(msgspec.json.encode(bytes(value)))  # base64, as msgspec writes it
    return value


class Query:
    """A read-only connection to a journal with the views of :data:`VIEWS`. Use :meth:`open`."""

    def __init__(self, path: str, conn: apsw.Connection) -> None:
        self.path = path
        self._conn = conn
        self._deadline = 0.0

    @classmethod
    def open(cls, path: str) -> Query:
        """Open ``path`` read-only (it works beside a runtime writing it) and create the views."""
        path = os.path.abspath(path)
        if not os.path.isfile(path):
            raise OperationalError(f"no journal at {path}")
        conn = connect(path, readonly=True)
        try:
            version = schema_version(conn)
            if version == 0:
                raise SchemaError(f"{path} is not a Stele journal (no schema version)")
            if version != SCHEMA_VERSION:
                raise SchemaError(
                    f"{path} has schema version {version}; this Stele queries version {SCHEMA_VERSION} "
                    + ("(upgrade Stele)" if version > SCHEMA_VERSION else "(a runtime migrates it when it opens it)")
                )
            conn.create_scalar_function("stele_json", _resolving(conn), 1, deterministic=True)
            for name, (_, body) in VIEWS.items():
                conn.execute(f"CREATE TEMP VIEW {name} AS {body}")
            made = cls(path, conn)
            conn.authorizer = made._authorize
            conn.set_progress_handler(made._progress, STEPS_PER_CHECK)
        except (apsw.Error, UnicodeDecodeError) as exc:
            close(conn)
            raise translate(exc, f"cannot open {path} for queries") from None
        except BaseException:
            close(conn)
            raise
        return made

    def _authorize(self, op: int, p1: str | None, p2: str | None, db: str | None, trigger: str | None) -> int:
        if op in _ALLOWED:
            return apsw.SQLITE_OK
        if op == apsw.SQLITE_FUNCTION:
            return apsw.SQLITE_DENY if (p2 or "").lower() in _FUNCTIONS_DENIED else apsw.SQLITE_OK
        if op == apsw.SQLITE_PRAGMA and (p1 or "").lower() in _PRAGMAS:
            return apsw.SQLITE_OK
        return apsw.SQLITE_DENY

    def _progress(self) -> bool:
        return self._deadline > 0 and time.monotonic() > self._deadline

    def run(self, sql: str, *, max_rows: int = 1000, timeout: float = 10.0) -> QueryResult:
        """Run one read-only statement; at most ``max_rows`` rows, at most ``timeout`` seconds."""
        if not sql.strip():
            raise QueryError("the query is empty")
        started = time.monotonic()
        self._deadline = started + timeout
        try:
            details = apsw.ext.query_info(self._conn, sql)
            rest = (details.query_remaining or "").strip().strip(";").strip()
            if rest:
                raise QueryError(f"one statement at a time: {rest[:60]!r} follows the first")
            columns = [str(name) for name, _ in details.description or ()]
            rows: list[list[Any]] = []
            truncated = False
            cursor = self._conn.cursor()
            try:
                for row in cursor.execute(sql):
                    if len(rows) >= max_rows:
                        truncated = True
                        break
                    rows.append(list(row))
            finally:
                cursor.close(force=True)
        except apsw.AuthError:
            raise QueryError(
                "only reading is allowed: this is a read-only view of the journal "
                "(SELECT and WITH over the views and tables; no ATTACH, no writes, no PRAGMA but table_info and kin)"
            ) from None
        except apsw.InterruptError:
            raise QueryError(f"the query ran longer than {timeout:g} s and was stopped") from None
        except apsw.SQLError as exc:
            raise QueryError(f"SQL error: {exc}") from None
        except apsw.ReadOnlyError:
            raise QueryError("only reading is allowed: this is a read-only view of the journal") from None
        except (apsw.Error, UnicodeDecodeError) as exc:
            raise translate(exc, f"cannot query {self.path}") from None
        finally:
            self._deadline = 0.0
        return QueryResult(columns, rows, truncated, time.monotonic() - started)

    def close(self) -> None:
        """Close the connection."""
        close(self._conn)

    def __enter__(self) -> Query:
        return self

    def __exit__(self, tp: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def query(path: str, sql: str, *, max_rows: int = 1000, timeout: float = 10.0) -> QueryResult:
    """Run one read-only statement over the journal at ``path`` with the views of :data:`VIEWS`."""
    with Query.open(path) as opened:
        return opened.run(sql, max_rows=max_rows, timeout=timeout)
