"""SQL over a PostgreSQL journal, in the user's words: the views of :mod:`storage._views`, on the server.

The same views as on a file (``entries``, ``actors``, ``inbox``,
``dead_letters``, ``snapshots``, ``promises``; the same columns), made as
TEMP views for this session only: a temporary object is found before the
journal's own tables, which stay reachable by their schema (``public.journal``).
Payloads become ``jsonb`` through a temporary PL/pgSQL function that reads
msgpack (``payload -> 'body' ->> 'amount'`` reaches inside; bytes are base64
text and timestamps ISO text, as the file's views write them).

Nothing a query says is written: each runs alone (a prepared statement holds
one command) in a READ ONLY transaction that is rolled back, with a statement
timeout, and must be a SELECT, WITH, VALUES or TABLE. Functions that act on
the server outside the transaction (ending sessions, advisory locks,
settings, large objects, files) are refused by name. The role in the URL
is the real boundary, as always on a server: give the people who query a
role that may only read.
"""

from __future__ import annotations

import datetime
import decimal
import json
import re
import time
from types import TracebackType
from typing import Any

import psycopg
from psycopg.types.string import TextLoader

from errors import QueryError

from ._errors import SchemaError
from ._pg_connect import connect, redact, translate
from ._pg_schema import SCHEMA_VERSION, schema_version
from ._views import VIEWS, QueryResult

TIME = (
    "to_char(to_timestamp((floor({} * 1000.0::float8 + 210866760000000.0::float8 + 0.5::float8)"
    " - 210866760000000.0::float8) / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
)
"""An epoch double as ISO 8601 UTC text with milliseconds, rounded exactly as SQLite's ``unixepoch``
does (to a julian-day millisecond, in doubles), so that a file's views and a database's agree."""


def _time(column: str) -> str:
    return TIME.format(column)


MSGPACK_TO_JSON = r"""
CREATE FUNCTION pg_temp.stele_mp(b bytea, INOUT pos integer, OUT v jsonb) LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    t integer; n bigint; i bigint; u numeric := 0; w integer; e integer; m numeric; s integer;
    x jsonb; k jsonb; acc jsonb; len integer; ext integer; secs numeric; nanos numeric;
BEGIN
    t := get_byte(b, pos); pos := pos + 1;
    IF t <= 127 THEN v := to_jsonb(t); RETURN; END IF;
    IF t >= 224 THEN v := to_jsonb(t - 256); RETURN; END IF;
    IF t = 192 THEN v := 'null'; RETURN; END IF;
    IF t = 193 THEN RAISE EXCEPTION 'not msgpack'; END IF;
    IF t = 194 THEN v := 'false'; RETURN; END IF;
    IF t = 195 THEN v := 'true'; RETURN; END IF;
    -- lengths and integers: big-endian, w bytes
    w := CASE WHEN t IN (196, 199, 204, 208, 217) THEN 1 WHEN t IN (197, 200, 205, 209, 218, 220, 222) THEN 2
              WHEN t IN (198, 201, 206, 210, 219, 221, 223, 202) THEN 4 WHEN t IN (207, 211, 203) THEN 8 ELSE 0 END;
    IF w > 0 THEN
        FOR i IN 0 .. w - 1 LOOP u := u * 256 + get_byte(b, pos + i); END LOOP;
        pos := pos + w;
    END IF;
    IF t BETWEEN 204 AND 207 THEN v := to_jsonb(u); RETURN; END IF;
    IF t BETWEEN 208 AND 211 THEN
        IF u >= 2::numeric ^ (8 * w - 1) THEN u := u - 2::numeric ^ (8 * w); END IF;
        v := to_jsonb(trunc(u)); RETURN;
    END IF;
    IF t = 202 OR t = 203 THEN  -- float32, float64: sign, exponent, fraction
        s := CASE WHEN t = 202 THEN 8 ELSE 11 END;
        len := CASE WHEN t = 202 THEN 23 ELSE 52 END;
        e := (trunc(u / 2::numeric ^ len) % 2::numeric ^ s)::integer;
        m := u % 2::numeric ^ len;
        IF e = 2::numeric ^ s - 1 THEN v := 'null'; RETURN; END IF;  -- inf, nan: null, as JSON has neither
        x := to_jsonb((CASE WHEN u >= 2::numeric ^ (len + s) THEN -1 ELSE 1 END)::float8 * CASE WHEN e = 0
            THEN (m::float8 / 2::float8 ^ len) * power(2::float8, 1 - (2::numeric ^ (s - 1) - 1)::integer)
            ELSE (1 + m::float8 / 2::float8 ^ len) * power(2::float8, e - (2::numeric ^ (s - 1) - 1)::integer) END);
        v := x; RETURN;
    END IF;
    IF t BETWEEN 160 AND 191 OR t IN (217, 218, 219) THEN
        len := CASE WHEN t < 192 THEN t - 160 ELSE u::integer END;
        v := to_jsonb(convert_from(substring(b FROM pos + 1 FOR len), 'UTF8')); pos := pos + len; RETURN;
    END IF;
    IF t IN (196, 197, 198) THEN
        len := u::integer;
        v := to_jsonb(translate(encode(substring(b FROM pos + 1 FOR len), 'base64'), E'\n', ''));
        pos := pos + len; RETURN;
    END IF;
    IF t BETWEEN 144 AND 159 OR t IN (220, 221) THEN
        n := CASE WHEN t < 160 THEN t - 144 ELSE u END;
        acc := '[]';
        FOR i IN 1 .. n LOOP
            SELECT r.pos, r.v INTO pos, x FROM pg_temp.stele_mp(b, pos) AS r;
            acc := acc || jsonb_build_array(x);
        END LOOP;
        v := acc; RETURN;
    END IF;
    IF t BETWEEN 128 AND 143 OR t IN (222, 223) THEN
        n := CASE WHEN t < 144 THEN t - 128 ELSE u END;
        acc := '{}';
        FOR i IN 1 .. n LOOP
            SELECT r.pos, r.v INTO pos, k FROM pg_temp.stele_mp(b, pos) AS r;
            SELECT r.pos, r.v INTO pos, x FROM pg_temp.stele_mp(b, pos) AS r;
            acc := acc || jsonb_build_object(CASE WHEN jsonb_typeof(k) = 'string' THEN k #>> '{}' ELSE k::text END, x);
        END LOOP;
        v := acc; RETURN;
    END IF;
    -- extensions: fixext 1-16, ext 8/16/32; the timestamp (type -1) becomes ISO text, others null
    len := CASE t WHEN 212 THEN 1 WHEN 213 THEN 2 WHEN 214 THEN 4 WHEN 215 THEN 8 WHEN 216 THEN 16
                  ELSE u::integer END;
    ext := get_byte(b, pos); pos := pos + 1;
    v := 'null';
    IF ext = 255 AND len IN (4, 8, 12) THEN
        u := 0;
        FOR i IN 0 .. len - 1 LOOP u := u * 256 + get_byte(b, pos + i); END LOOP;
        IF len = 4 THEN secs := u; nanos := 0;
        ELSIF len = 8 THEN nanos := trunc(u / 2::numeric ^ 34); secs := u % 2::numeric ^ 34;
        ELSE nanos := trunc(u / 2::numeric ^ 64); secs := u % 2::numeric ^ 64;
             IF secs >= 2::numeric ^ 63 THEN secs := secs - 2::numeric ^ 64; END IF;
        END IF;
        v := to_jsonb(to_char(to_timestamp((secs + nanos / 1e9)::float8) AT TIME ZONE 'UTC',
                              'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'));
    END IF;
    pos := pos + len;
END $$;
CREATE FUNCTION pg_temp.stele_json(data bytea) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    r record;
BEGIN
    IF data IS NULL OR length(data) = 0 THEN RETURN NULL; END IF;
    SELECT * INTO r FROM pg_temp.stele_mp(data, 0);
    IF r.pos <> length(data) THEN RETURN NULL; END IF;  -- more than one value: not a payload
    RETURN r.v;
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;  -- not msgpack
END $$;
"""
"""msgpack to ``jsonb``, in PL/pgSQL, for this session (``pg_temp``)."""


def pg_views(schema: str) -> dict[str, str]:
    """Each view's definition over the journal's tables in ``schema``."""
    q = f'"{schema}"'
    j = "pg_temp.stele_json"
    return {
        "entries": f"""SELECT j.position, a.address, a.type AS actor_type, j.seq, j.step, j.kind, j.type,
            {_time("j.at")} AS time, j.at, {j}(j.data) AS payload
        FROM {q}.journal AS j JOIN {q}.actors AS a ON a.id = j.actor""",
        "actors": f"""SELECT a.address, a.type, substr(a.address, length(a.type) + 2) AS key, a.status, a.reason,
            coalesce((SELECT max(seq) FROM {q}.journal WHERE actor = a.id), 0) AS last_seq,
            (SELECT {_time("at")} FROM {q}.journal WHERE actor = a.id ORDER BY seq DESC LIMIT 1) AS last_time,
            coalesce(p.messages, 0) AS pending, coalesce(p.timers, 0) AS timers,
            coalesce(d.letters, 0) AS dead_letters, {_time("a.updated")} AS registered
        FROM {q}.actors AS a
        LEFT JOIN (SELECT target, count(*) FILTER (WHERE timer_id IS NULL) AS messages,
                          count(*) FILTER (WHERE timer_id IS NOT NULL) AS timers
                   FROM {q}.inbox GROUP BY target) AS p ON p.target = a.address
        LEFT JOIN (SELECT target, count(*) AS letters FROM {q}.dead_letters GROUP BY target) AS d
            ON d.target = a.address""",
        "inbox": f"""SELECT i.id, i.target AS address, i.handler, i.type, {j}(i.payload) AS payload,
            CASE WHEN i.timer_id IS NOT NULL THEN 'timer' WHEN i.reply_to IS NOT NULL THEN 'ask'
                 ELSE 'message' END AS kind,
            {_time("i.due")} AS due, i.idempotency_key, i.attempts, i.sender, i.timer_id, i.reply_to,
            {_time("i.at")} AS time
        FROM {q}.inbox AS i""",
        "dead_letters": f"""SELECT d.id, d.target AS address, d.handler, d.type, {j}(d.payload) AS payload,
            d.sender, d.attempts, d.reason, {_time("d.at")} AS time
        FROM {q}.dead_letters AS d""",
        "snapshots": f"""SELECT a.address, s.seq, s.type, {j}(s.data) AS state, {_time("s.at")} AS time
        FROM {q}.snapshots AS s JOIN {q}.actors AS a ON a.id = s.actor""",
        "promises": f"""SELECT p.address, p.name, {j}(p.value) AS value, {_time("p.at")} AS time
        FROM {q}.promises AS p""",
    }


STATEMENTS = ("select", "with", "values", "table")
"""What a query may begin with."""

_DENIED = re.compile(
    r"\b(pg_terminate_backend|pg_cancel_backend|pg_(try_)?advisory\w*|set_config|pg_reload_conf|pg_rotate_logfile"
    r"|lo_\w+|dblink\w*|pg_read_\w*file|pg_ls_\w+|pg_stat_file|pg_notify|pg_switch_wal|pg_promote|pg_create_\w+"
    r"|pg_drop_\w+|pg_log_backend_memory_contexts|pg_file_\w+|pg_import_system_collations|nextval|setval)\b",
    re.IGNORECASE,
)
_LEADING = re.compile(r"^\s*(?:(?:--[^\n]*\n)|(?:/\*.*?\*/)|\s|\()*", re.DOTALL)


class PgQuery:
    """A session on a PostgreSQL journal with the views of :data:`storage.VIEWS`. Use :meth:`open`."""

    def __init__(self, where: str, conn: psycopg.Connection[Any]) -> None:
        self.path = where
        """The database's URL, without its password."""
        self._conn = conn

    @classmethod
    def open(cls, url: str) -> PgQuery:
        """Connect to ``url``, check it is a Stele journal of this version, and make the views."""
        where = redact(url)
        conn = connect(url)
        for name in ("json", "jsonb"):  # JSON as its text, as the file's views give it
            conn.adapters.register_loader(name, TextLoader)
        try:
            try:
                version = schema_version(conn, where)
                if version == 0:
                    raise SchemaError(f"{where} is not a Stele journal (no Stele tables)")
                if version != SCHEMA_VERSION:
                    raise SchemaError(
                        f"{where} has schema version {version}; this Stele queries version {SCHEMA_VERSION} "
                        + ("(upgrade Stele)" if version > SCHEMA_VERSION else "(a runtime migrates it when it opens)")
                    )
                row = conn.execute("SELECT current_schema()").fetchone()
                schema = str(row[0]) if row else "public"
                with conn.transaction():
                    conn.execute(MSGPACK_TO_JSON)
                    for name, body in pg_views(schema).items():
                        conn.execute(f"CREATE TEMP VIEW {name} AS {body}")
                conn.execute("SET default_transaction_read_only = on")
            except psycopg.Error as exc:
                raise translate(exc, f"cannot open {where} for queries") from None
        except BaseException:
            conn.close()
            raise
        return cls(where, conn)

    def run(self, sql: str, *, max_rows: int = 1000, timeout: float = 10.0) -> QueryResult:
        """Run one read-only statement; at most ``max_rows`` rows, at most ``timeout`` seconds."""
        if not sql.strip():
            raise QueryError("the query is empty")
        first = _LEADING.sub("", sql, count=1).split(None, 1)
        if not first or first[0].lower().rstrip("(") not in STATEMENTS:
            raise QueryError(
                "only reading is allowed: this is a read-only view of the journal (one SELECT, WITH, VALUES or "
                "TABLE statement over the views and tables)"
            )
        denied = _DENIED.search(sql)
        if denied:
            raise QueryError(f"only reading is allowed: {denied.group(0)}() acts outside the query and is refused")
        started = time.monotonic()
        conn = self._conn
        rows: list[list[Any]] = []
        truncated = False
        try:
            conn.execute("BEGIN READ ONLY")
            try:
                conn.execute("SELECT set_config('statement_timeout', %s, true)", (f"{max(1, int(timeout * 1000))}",))
                with conn.cursor() as cursor:
                    cursor.execute(sql, prepare=True)  # prepared: one command, never a second one after it
                    columns = [c.name for c in cursor.description or ()]
                    for row in cursor:
                        if len(rows) >= max_rows:
                            truncated = True
                            break
                        rows.append([_value(v) for v in row])
            finally:
                if not conn.closed:
                    conn.execute("ROLLBACK")
        except psycopg.errors.QueryCanceled:
            raise QueryError(f"the query ran longer than {timeout:g} s and was stopped") from None
        except psycopg.errors.ReadOnlySqlTransaction:
            raise QueryError("only reading is allowed: this is a read-only view of the journal") from None
        except (psycopg.ProgrammingError, psycopg.DataError) as exc:
            raise QueryError(f"SQL error: {str(exc).strip().splitlines()[0]}") from None
        except psycopg.Error as exc:
            raise translate(exc, f"cannot query {self.path}") from None
        return QueryResult(columns, rows, truncated, time.monotonic() - started)

    def close(self) -> None:
        """Close the session (its views and functions go with it)."""
        self._conn.close()

    def __enter__(self) -> PgQuery:
        return self

    def __exit__(self, tp: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _value(value: Any) -> Any:
    """A value as the file's views give it: int, float, str, bytes or None (other types as their text)."""
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return value
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    return json.dumps(value, ensure_ascii=False, default=str) if isinstance(value, dict | list) else str(value)


__all__ = ("VIEWS", "PgQuery")
